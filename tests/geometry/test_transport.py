"""Transport anchors: POT's plan, the entropy it is matched to, the balance, and the sample's dual."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import gearsx as gx
from gearsx.geometry import _transport

ot = pytest.importorskip("ot", reason="POT is the `transport` extra (installed by make test)")


def _tissue(seed=0, n_spots=300, n_cells=400, n_genes=30, noise=0.3):
    """Spots and cells whose profiles are smooth functions of their positions in the unit square, plus noise."""
    rng = np.random.default_rng(seed)
    freq, phase = rng.normal(size=(2, n_genes)) * 3, rng.uniform(0, 2 * np.pi, n_genes)
    spots, cells = rng.uniform(size=(n_spots, 2)), rng.uniform(size=(n_cells, 2))

    def expr(p):
        return np.sin(p @ freq + phase) + noise * rng.normal(size=(len(p), n_genes))

    return spots, expr(spots), cells, expr(cells)


def _scaled_cost(q, r):
    d = np.sqrt(np.maximum((q**2).sum(1)[:, None] + (r**2).sum(1)[None] - 2 * q @ r.T, 0))
    return (d - d.min()) / np.ptp(d)


def _entropy(w):
    return float(-(w * np.log(np.maximum(w, 1e-300))).sum(1).mean())


def test_anchors_are_the_barycentres_of_pots_plan_at_the_matched_entropy():
    spots, s_expr, cells, c_expr = _tissue()
    for target in (1.5, 3.0):
        t = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=target)
        assert abs(t.entropy - target) < 0.05
        assert t.n_solved == len(cells)
        # the reference implementation: POT's plan at the epsilon found, on the same scaled cost
        m = len(spots)
        plan = ot.sinkhorn(np.full(len(cells), 1 / len(cells)), np.full(m, 1 / m), _scaled_cost(c_expr, s_expr),
                           t.epsilon, numItermax=3000, stopThr=1e-6)  # fmt: skip
        w = plan / plan.sum(1, keepdims=True)
        np.testing.assert_allclose(t.anchors, w @ spots, atol=1e-6)
        spread = np.sqrt((w * ((spots[None] - t.anchors[:, None]) ** 2).sum(-1)).sum(1))
        np.testing.assert_allclose(t.spread, spread, atol=1e-6)
        assert t.spots is None  # no summary of the rows unless asked
        # the rows' heaviest spots, heaviest first, renormalised: POT's plan read the same way
        top = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=target, top_k=5)
        np.testing.assert_allclose(top.anchors, t.anchors)  # the summary changes nothing else
        heavy = np.argsort(-w, axis=1)[:, :5]
        np.testing.assert_array_equal(top.spots, heavy)
        ref_w = np.take_along_axis(w, heavy, axis=1)
        np.testing.assert_allclose(top.spot_weights, ref_w / ref_w.sum(1, keepdims=True), atol=1e-6)
        every = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=target, top_k=m)
        np.testing.assert_allclose((every.spot_weights[:, :, None] * spots[every.spots]).sum(1), t.anchors, atol=1e-6)
    # a smoother plan (more entropy) spreads every cell over more spots
    sharp = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=1.5)
    smooth = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=3.0)
    assert smooth.epsilon > sharp.epsilon
    assert np.median(smooth.spread) > np.median(sharp.spread)


def test_the_balance_keeps_spots_that_resemble_every_cell_from_drawing_them():
    """Known answer: spots whose profile is the tissue's mean profile sit in one corner. Noisy cells lie
    closer to that mean than to their own spots' noisy profiles, so weighing each cell's spots on its own
    pulls many cells into the corner; the plan gives those spots only their share of the cells."""
    rng = np.random.default_rng(1)
    spots, s_expr, cells, c_expr = _tissue(seed=1, noise=0.6)
    hubs = rng.uniform(0, 0.08, size=(40, 2))
    h_expr = np.tile(s_expr.mean(0), (40, 1)) + 0.05 * rng.normal(size=(40, s_expr.shape[1]))
    ref, ref_expr = np.r_[spots, hubs], np.r_[s_expr, h_expr]
    t = gx.geometry.transport_anchors(c_expr, ref_expr, ref, target_entropy=2.5)
    # each cell weighs its spots by the same kernel at the same entropy, without the columns' balance
    cost = _scaled_cost(c_expr, ref_expr)
    lo, hi = np.log(1e-3), 0.0
    for _ in range(30):
        eps = np.exp((lo + hi) / 2)
        z = -cost / eps
        w = np.exp(z - z.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        lo, hi = (lo, np.log(eps)) if _entropy(w) > t.entropy else (np.log(eps), hi)
    rows_alone = w @ ref

    def corner_pull(a):  # how far the anchors were drawn towards the hubs' corner
        return float(np.median(np.linalg.norm(a, axis=1)))

    assert corner_pull(rows_alone) < 0.8 * corner_pull(t.anchors)
    err = {
        name: float(np.median(np.linalg.norm(a - cells, axis=1)))
        for name, a in (("plan", t.anchors), ("rows", rows_alone))
    }
    assert err["plan"] < 0.8 * err["rows"]


def test_a_sample_solve_extends_to_every_cell_by_the_plans_dual(monkeypatch):
    spots, s_expr, cells, c_expr = _tissue(n_cells=1200)
    full = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=2.5)
    monkeypatch.setattr(_transport, "SOLVE_CELLS", 400)
    sampled = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=2.5, random_state=3)
    assert sampled.n_solved == 400
    assert abs(sampled.entropy - 2.5) < 0.05

    # every cell placed near where the full solve places it: the dual carries the balance, which each
    # cell's spots weighed alone at the same epsilon (the columns unscaled) lack
    def dist(a, b):
        return float(np.linalg.norm(a - b, axis=1).mean())

    z = -_scaled_cost(c_expr, s_expr) / sampled.epsilon
    rows_alone = np.exp(z - z.max(1, keepdims=True))
    rows_alone = (rows_alone / rows_alone.sum(1, keepdims=True)) @ spots
    assert dist(sampled.anchors, full.anchors) < 0.6 * dist(rows_alone, full.anchors)
    assert dist(sampled.anchors, cells) < 1.3 * dist(full.anchors, cells)
    # seeded: the same sample gives the same anchors; a sparse query gives them too (densified in blocks)
    again = gx.geometry.transport_anchors(sp.csr_matrix(c_expr), s_expr, spots, target_entropy=2.5, random_state=3)
    np.testing.assert_allclose(again.anchors, sampled.anchors, atol=1e-8)
    # another seed solves on another sample: close, not the same
    other = gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=2.5, random_state=4)
    assert not np.allclose(other.anchors, sampled.anchors)
    assert dist(other.anchors, full.anchors) < 0.6 * dist(rows_alone, full.anchors)


def test_transport_anchors_refuse_bad_input(monkeypatch):
    spots, s_expr, cells, c_expr = _tissue(n_spots=50, n_cells=40)
    with pytest.raises(ValueError, match="same genes"):
        gx.geometry.transport_anchors(c_expr[:, :5], s_expr, spots, target_entropy=2.0)
    with pytest.raises(ValueError, match="per reference row \\(10\\)"):  # 50 profiles, 10 positions
        gx.geometry.transport_anchors(c_expr, s_expr, spots[:10], target_entropy=2.0)
    with pytest.raises(ValueError, match="no rows"):
        gx.geometry.transport_anchors(c_expr[:0], s_expr, spots, target_entropy=2.0)
    with pytest.raises(ValueError, match="target_entropy"):
        gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=0)
    with pytest.raises(ValueError, match=r"`top_k`=51 exceeds the reference's 50 spots"):
        gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=2.0, top_k=51)
    with pytest.raises(ValueError, match="top_k"):
        gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=2.0, top_k=0)
    bad = c_expr.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="query_expression"):
        gx.geometry.transport_anchors(bad, s_expr, spots, target_entropy=2.0)
    monkeypatch.setattr(_transport, "MAX_SPOTS", 20)
    with pytest.raises(ValueError, match="anchor_transport=False"):
        gx.geometry.transport_anchors(c_expr, s_expr, spots, target_entropy=2.0)
