"""Topo-IPA-R structure module: graphs, gate losses, identities, equivariance, path separation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

import gearsx.module._structure as structure_mod
from gearsx.geometry import build_targets
from gearsx.module import GearsModule, StructureModule, collate_targets
from gearsx.module._structure import (
    candidate_graph,
    gate_losses,
    neighbor_lists,
    one_step_operator,
    spatial_graph,
)


def _batch(n=60, b=2, f=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, n, f, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    if b > 1:
        mask[1, n - 10 :] = False  # one padded set
    return h, mask


def test_candidate_graph_is_symmetric_knn_without_diagonal_or_padding():
    h, mask = _batch()
    adj, cos = candidate_graph(h, mask, k=5)
    assert torch.equal(adj, adj.transpose(1, 2))
    assert not adj.diagonal(dim1=1, dim2=2).any()
    assert not adj[1, 50:].any()
    assert not adj[1, :, 50:].any()
    # every valid point keeps its own 5 most similar points (cosine), checked against scikit-learn
    x = torch.nn.functional.normalize(h[0], dim=-1).numpy()
    idx = NearestNeighbors(n_neighbors=6, metric="cosine").fit(x).kneighbors(x)[1][:, 1:]
    a = adj[0].numpy()
    assert all(a[i, idx[i]].all() for i in range(len(x)))
    assert a.sum(1).min() >= 5


def test_candidate_graph_breaks_ties_by_index():
    h = torch.ones(1, 6, 3)  # all cosines equal
    adj, _ = candidate_graph(h, torch.ones(1, 6, dtype=torch.bool), k=2)
    # point 0 picks 1, 2; points 1.. pick the two lowest other indices; then symmetrise
    expected = np.zeros((6, 6), bool)
    for i in range(6):
        others = [j for j in range(6) if j != i][:2]
        expected[i, others] = True
    expected |= expected.T
    assert np.array_equal(adj[0].numpy(), expected)


def test_spatial_graph_and_one_step_operator():
    xy = torch.rand(1, 80, 2, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 80, dtype=torch.bool)
    adj = spatial_graph(xy, mask, k=6)[0].numpy()
    idx = NearestNeighbors(n_neighbors=7).fit(xy[0].numpy()).kneighbors(xy[0].numpy())[1][:, 1:]
    ref = np.zeros_like(adj)
    for i in range(80):
        ref[i, idx[i]] = True
    assert np.array_equal(adj, ref | ref.T)
    t1, a = one_step_operator(xy, mask, k=6)
    assert torch.allclose(t1.sum(-1), torch.ones(1, 80, dtype=t1.dtype))
    assert (t1[~a] == 0).all()


def test_gate_losses_zero_at_the_target_and_positive_elsewhere():
    xy = torch.rand(1, 50, 2, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 50, dtype=torch.bool)
    t1, true_adj = one_step_operator(xy, mask, k=5)
    cand = spatial_graph(xy, mask, k=12)  # candidates contain the true neighbours and more
    nbr, nbr_mask = neighbor_lists(cand)
    t = t1.gather(2, nbr) * nbr_mask
    exact = torch.log(t.clamp_min(1e-30))  # logits whose softmax is T^1 restricted to candidates
    kl, _ = gate_losses(exact, nbr, nbr_mask, t1, true_adj)
    assert kl.item() < 1e-6
    flat_kl, flat_rank = gate_losses(torch.zeros_like(exact), nbr, nbr_mask, t1, true_adj)
    assert flat_kl.item() > 0.1
    assert math.isclose(flat_rank.item(), 1.0, rel_tol=1e-6)  # margin 1, all logits equal
    sep = torch.where(true_adj.gather(2, nbr), 5.0, -5.0) * nbr_mask
    _, rank = gate_losses(sep, nbr, nbr_mask, t1, true_adj)
    assert rank.item() == 0.0


def test_untrained_block_returns_its_input_and_is_rotation_and_permutation_equivariant():
    torch.manual_seed(0)
    st = StructureModule(8, 16, n_heads=2, n_recycles=3, k_candidates=10).double()
    h, mask = _batch(n=40, b=1)
    mask[:] = True
    c = torch.randn(1, 40, 16, dtype=torch.float64)
    x0 = torch.randn(1, 40, 2, dtype=torch.float64)
    adj, _ = candidate_graph(h, mask, 10)
    xs, _ = st.run(c, x0, adj, mask)
    assert torch.allclose(xs[-1], x0 - x0.mean(1, keepdim=True), atol=1e-6)  # A_h = 0 at init
    with torch.no_grad():
        st.coord.normal_(std=0.3)
        st.rbf.normal_()
    theta = 0.9
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    out = st.run(c, x0, adj, mask)[0][-1]
    out_rot = st.run(c, x0 @ rot.T, adj, mask)[0][-1]
    assert torch.allclose(out_rot, out @ rot.T, atol=1e-8)
    assert not torch.allclose(out, x0 - x0.mean(1, keepdim=True), atol=1e-3)  # it does move the points
    perm = torch.randperm(40)
    out_p = st.run(c[:, perm], x0[:, perm], adj[:, perm][:, :, perm], mask)[0][-1]
    assert torch.allclose(out_p, out[:, perm], atol=1e-8)


def test_oracle_path_never_reads_the_candidate_graph_or_gate(monkeypatch):
    torch.manual_seed(0)
    st = StructureModule(8, 16, n_heads=2, n_recycles=2, k_candidates=10)
    h, mask = _batch(n=30, b=1)
    mask[:] = True
    c, x0 = torch.randn(1, 30, 16), torch.randn(1, 30, 2)
    xy = torch.rand(1, 30, 2)
    ref = st.forward_oracle(c, x0, xy, mask, return_attention=True)

    def boom(*a, **k):
        msg = "the oracle path touched the candidate graph or the gate"
        raise AssertionError(msg)

    monkeypatch.setattr(structure_mod, "candidate_graph", boom)
    monkeypatch.setattr(st.gate, "forward", boom)
    xs, attns, adj = st.forward_oracle(c, x0, xy, mask, return_attention=True)
    assert torch.equal(adj, spatial_graph(xy, mask, st.k_oracle))
    assert torch.allclose(xs[-1], ref[0][-1])
    # attention is confined to the true spatial edges (plus self-loops)
    allowed = adj[0] | torch.eye(30, dtype=torch.bool)
    assert (attns[-1][0][:, ~allowed] == 0).all()
    with pytest.raises(AssertionError, match="touched"):
        st.forward_inference(h, c, x0, mask)


def _targets(b=2, n=64, kind="gram"):
    rng = np.random.default_rng(0)
    return collate_targets([build_targets(rng.uniform(size=(n, 2)), kind=kind) for _ in range(b)])


@pytest.mark.parametrize("kind", ["gram", "rw_stress"])
def test_gears_ipa_phases_and_gate_detachment(kind):
    torch.manual_seed(0)
    t = _targets(kind=kind)
    h = torch.randn(2, 64, 8)
    factor = torch.nn.functional.pad(t.coords, (0, 6))
    mod = GearsModule(8, dim=16, n_out=8, n_heads=2, n_inducing=4, structure="ipa", n_recycles=2, k_candidates=10)
    block_params = [p for n_, p in mod.structure.named_parameters() if not n_.startswith("gate.")]
    # phase 1 (generator warm-up): the gate trains, the block does not
    out = mod.loss(h, t, factor, kind=kind, refiner_on=False)
    out.total.backward()
    assert out.gate_kl.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.structure.gate.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in block_params)
    # phase 2 with no gate losses: the geometry loss reaches the block but not the gate (bias detached)
    mod.zero_grad(set_to_none=True)
    out = mod.loss(h, t, factor, kind=kind, refiner_on=True, weights={"gate_joint": 0.0, "gate_trust": 0.0})
    out.total.backward()
    assert out.structure.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block_params)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in mod.structure.gate.parameters())
    v, vb = mod(h, t.mask)
    assert v.shape == (2, 64, 2)
    assert vb.shape == (2, 64, 8)


@pytest.mark.parametrize("structure", [None, "refiner", "ipa"])
def test_loss_weights_accepted_are_those_the_loss_reads(structure):
    """Each term accepted for a structure moves the loss when its weight moves; the others are refused."""
    from gearsx.module._gears import LOSS_WEIGHTS, check_loss_weights

    t = _targets()
    h = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(0))
    factor = torch.nn.functional.pad(t.coords, (0, 6))
    kw = {"n_recycles": 2, "k_candidates": 10} if structure == "ipa" else {}
    mod = GearsModule(8, dim=16, n_out=8, n_heads=2, n_inducing=4, structure=structure, **kw).eval()
    if structure == "refiner":
        mod.sigma_data.fill_(0.1)
    own = LOSS_WEIGHTS[None] | (LOSS_WEIGHTS[structure] if structure else {})

    def total(weights):
        torch.manual_seed(0)  # the refiner's noise levels
        return float(mod.loss(h, t, factor, refiner_on=True, weights=weights).total)

    base = total({})
    for name in own:
        if name in {"overlap", "gate_trust"}:  # 0 here: no paired minisets; the gate at its own snapshot
            continue
        assert check_loss_weights({name: 3.0}, structure) == {name: 3.0}
        assert total({name: own[name] + 3.0}) != pytest.approx(base, rel=1e-9), name
    for name in {n for part in LOSS_WEIGHTS.values() for n in part} - set(own):
        with pytest.raises(ValueError, match="would change nothing"):
            check_loss_weights({name: 1.0}, structure)
