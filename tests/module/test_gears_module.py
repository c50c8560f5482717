import numpy as np
import pytest
import torch

from gearsx.geometry import MinisetSampler, build_targets
from gearsx.module import ISAB, PMA, GearsModule, collate_targets, principal_coords
from gearsx.module._set_losses import (
    factor_regression_loss,
    knn_edge_loss,
    nca_knn_loss,
    overlap_gram_loss,
    target_knn,
)
from gearsx.train import MinisetBatches


@pytest.fixture
def module():
    torch.manual_seed(0)
    m = GearsModule(12, dim=32, n_out=8, n_inducing=8, structure="refiner")
    m.sigma_data.fill_(0.1)
    return m.eval().double()


def test_permutation_equivariance(module):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 30, 12, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 30, dtype=torch.bool)
    perm = torch.randperm(30, generator=g)
    with torch.no_grad():
        c = module.encode(h, mask)
        v = module.generate(c, mask)
        r = torch.randn(2, 30, 8, generator=g, dtype=torch.float64)
        s = torch.tensor([0.05, 0.3], dtype=torch.float64)
        d = module.denoise(r, s, v, c, mask)
        cp = module.encode(h[:, perm], mask)
        vp = module.generate(cp, mask)
        dp = module.denoise(r[:, perm], s, vp, cp, mask)
        pma = PMA(32, 1, 4).double()
        pooled, pooled_p = pma(c, mask), pma(c[:, perm], mask)
    torch.testing.assert_close(cp, c[:, perm])
    torch.testing.assert_close(vp, v[:, perm])
    torch.testing.assert_close(dp, d[:, perm])
    assert not torch.allclose(v, v[:, torch.roll(torch.arange(30), 1)])  # not trivially constant
    assert pooled.shape == (2, 1, 32)
    torch.testing.assert_close(pooled_p, pooled)  # pooling is invariant


def test_padding_does_not_leak(module):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(1, 20, 12, generator=g, dtype=torch.float64)
    padded = torch.cat([h, 100 * torch.randn(1, 7, 12, generator=g, dtype=torch.float64)], 1)
    mask = torch.zeros(1, 27, dtype=torch.bool)
    mask[:, :20] = True
    with torch.no_grad():
        v, vb = module(h, torch.ones(1, 20, dtype=torch.bool), refine_steps=0)
        pv, pvb = module(padded, mask, refine_steps=0)
    torch.testing.assert_close(pv[:, :20], v)
    assert torch.all(pv[:, 20:] == 0)
    isab = ISAB(16, 4, 2).double()
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    m = torch.tensor([[True] * 6 + [False] * 3])
    torch.testing.assert_close(isab(x, m)[:, :6], isab(x[:, :6], m[:, :6]))


def test_refine_without_sigma_data_returns_generator(module):
    module.sigma_data.zero_()
    h = torch.randn(1, 15, 12, dtype=torch.float64)
    mask = torch.ones(1, 15, dtype=torch.bool)
    with torch.no_grad():
        v, vb = module(h, mask, refine_steps=4)
    torch.testing.assert_close(v, vb)


def test_generator_only_module_has_no_refiner():
    """The default (``structure=None``) builds no refiner layers, returns the generator's proposal whatever
    ``sigma_data`` holds, and starts from the generator weights a refiner model of the same seed gets."""
    torch.manual_seed(0)
    plain = GearsModule(12, dim=32, n_out=8, n_inducing=8).double()
    torch.manual_seed(0)
    full = GearsModule(12, dim=32, n_out=8, n_inducing=8, structure="refiner").double()
    assert not any(name.startswith(("ref_", "noise_emb")) for name, _ in plain.named_parameters())
    assert any(name.startswith("ref_") for name, _ in full.named_parameters())
    plain.sigma_data.fill_(0.1)  # even with a residual scale set, nothing refines
    h = torch.randn(2, 15, 12, dtype=torch.float64)
    mask = torch.ones(2, 15, dtype=torch.bool)
    with torch.no_grad():
        v, vb = plain.eval()(h, mask, refine_steps=4)
    torch.testing.assert_close(v, vb)
    # same initial generator weights (the refiner's layers are built after the generator's)
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p, dict(full.named_parameters())[name])


def test_principal_coords_recover_planar_geometry():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 2))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    v = torch.as_tensor(np.concatenate([y, np.zeros((50, 4))], 1) @ q * 3 + 1)[None]
    xy = principal_coords(v, torch.ones(1, 50, dtype=torch.bool))[0].numpy()
    d_true = np.linalg.norm(y[:, None] - y[None], axis=-1)
    d_pred = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.testing.assert_allclose(d_pred / d_pred.mean(), d_true / d_true.mean(), atol=1e-8)


def test_set_losses_oracle_and_invariance():
    rng = np.random.default_rng(0)
    ys = [rng.uniform(size=(n, 2)) for n in (40, 55)]
    tb = collate_targets([build_targets(y, kind="gram") for y in ys], dtype=torch.float64)
    mask = tb.mask
    factor = torch.zeros(2, 55, 8, dtype=torch.float64)
    for i, y in enumerate(ys):
        factor[i, : len(y)] = torch.as_tensor(build_targets(y, kind="gram").gram_factor[:, :8])
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    rotated = factor @ torch.as_tensor(q)
    assert float(factor_regression_loss(rotated, factor, mask)) < 1e-12
    assert float(factor_regression_loss(torch.randn_like(factor) * mask[..., None], factor, mask)) > 0.5
    knn = target_knn(tb.coords, mask, 5)
    assert float(knn_edge_loss(3 * rotated + 2, tb.coords, knn, mask)) < 1e-12
    good = float(nca_knn_loss(rotated, knn, mask))
    bad = float(nca_knn_loss(torch.randn_like(factor) * mask[..., None], knn, mask))
    assert good < bad
    shared = torch.arange(20)[None].repeat(1, 1)
    ov_same = overlap_gram_loss(rotated[:1], 2 * factor[:1], shared, shared, torch.ones(1, 20, dtype=torch.bool))
    assert float(ov_same) < 1e-12
    ov_diff = overlap_gram_loss(
        factor[:1], torch.randn(1, 55, 8, dtype=torch.float64), shared, shared, torch.ones(1, 20, dtype=torch.bool)
    )
    assert float(ov_diff) > 0.1


def test_miniset_sampler_locality_and_pairs():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(3000, 2))
    s = MinisetSampler(xy, n_min=128, n_max=256)
    idx = s.sample(np.random.default_rng(1))
    assert 128 <= len(idx) <= 256
    assert len(np.unique(idx)) == len(idx)
    spread = np.linalg.norm(xy[idx] - xy[idx].mean(0), axis=1).mean()
    random_spread = np.linalg.norm(xy[: len(idx)] - xy[: len(idx)].mean(0), axis=1).mean()
    assert spread < 0.5 * random_spread  # local, not a random subset
    np.testing.assert_array_equal(idx, s.sample(np.random.default_rng(1)))
    pair = s.sample_pair(np.random.default_rng(2))
    np.testing.assert_array_equal(pair.idx_a[pair.shared_a], pair.idx_b[pair.shared_b])
    n_shared = len(np.intersect1d(pair.idx_a, pair.idx_b))
    assert n_shared == len(pair.shared_a) >= max(32, int(0.5 * min(len(pair.idx_a), len(pair.idx_b))))
    with pytest.raises(ValueError, match="n_min=128"):
        MinisetSampler(xy[:100], n_min=128)


def test_miniset_batches_are_seeded_and_single_slide():
    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(600, 2))
    slides = np.repeat([0, 1], 300)
    emb = rng.normal(size=(600, 5)).astype(np.float32)
    a = next(iter(MinisetBatches(emb, xy, slides, batch_size=3, n_batches=1, n_min=40, n_max=60, seed=7)))
    b = next(iter(MinisetBatches(emb, xy, slides, batch_size=3, n_batches=1, n_min=40, n_max=60, seed=7)))
    assert a["h"].shape[0] == 6
    assert a["pairs"]["shared_a"].shape[0] == 3
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        np.testing.assert_array_equal(ra, rb)
    for i in range(3):  # partners come from the same slide and share the listed spots
        ra, rb = a["rows"][i], a["rows"][i + 3]
        assert len(np.unique(slides[np.concatenate([ra, rb])])) == 1
        m = a["pairs"]["shared_mask"][i].numpy()
        np.testing.assert_array_equal(
            ra[a["pairs"]["shared_a"][i].numpy()[m]], rb[a["pairs"]["shared_b"][i].numpy()[m]]
        )
        np.testing.assert_allclose(a["h"][i, : len(ra)].numpy(), emb[ra])
