"""The stitch's large-scale pieces against plain references: compiled stress, blockwise statistics, scale."""

import numpy as np
import pytest

from gearsx.geometry._stitch_scales import (
    PatchScales,
    _edge_statistics,
    _overlap_log_ratios,
    _weighted_median_by_group,
    checked_patches,
    patch_edge_table,
)
from gearsx.geometry._stitch_solve import _compiled_kernel, _edge_scale


def _reference_huber(x, i, j, d, inv_u, wu, wl, delta):
    """Loss and gradient of the weighted Huber stress written with array operations."""
    diff = x[i] - x[j]
    dist = np.sqrt((diff**2).sum(1) + 1e-18)
    r = (dist - d) * inv_u
    loss = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    c = np.clip(r, -delta, delta) * wu / dist
    grad = np.zeros_like(x)
    np.add.at(grad, i, c[:, None] * diff)
    np.add.at(grad, j, -c[:, None] * diff)
    return float(wl @ loss), grad


def test_compiled_stress_matches_array_reference_and_finite_differences(rng):
    n, m = 60, 400
    x = rng.normal(size=(n, 2))
    i = rng.integers(0, n, m).astype(np.int32)
    j = ((i + rng.integers(1, n, m)) % n).astype(np.int32)
    d = np.linalg.norm(x[i] - x[j], axis=1) * rng.uniform(0.5, 1.5, m)  # both Huber branches
    inv_u, wu, wl = 1.0 / np.full(m, np.median(d)), rng.uniform(0.1, 1, m), rng.uniform(0.1, 1, m)
    wu = wl / np.median(d)  # the gradient factor of this loss
    kernel = _compiled_kernel()
    grad = np.zeros((n, 2))
    f = kernel(x, i, j, d, inv_u, wu, wl, 0.1, grad)
    f_ref, g_ref = _reference_huber(x, i, j, d, inv_u, wu, wl, 0.1)
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(grad, g_ref, rtol=1e-10, atol=1e-14)
    # and it is the gradient of the loss
    h, (a, c) = 1e-6, (3, 1)
    xp, xm = x.copy(), x.copy()
    xp[a, c] += h
    xm[a, c] -= h
    fd = (
        kernel(xp, i, j, d, inv_u, wu, wl, 0.1, np.zeros((n, 2)))
        - kernel(xm, i, j, d, inv_u, wu, wl, 0.1, np.zeros((n, 2)))
    ) / (2 * h)
    assert grad[a, c] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_edge_scale_recovers_a_planted_factor(rng):
    x = rng.normal(size=(200, 2))
    i, j = rng.integers(0, 200, 1000), rng.integers(0, 200, 1000)
    d = 3.7 * np.linalg.norm(x[i] - x[j], axis=1)
    assert _edge_scale(x, i, j, d, rng.uniform(0.1, 1, 1000)) == pytest.approx(3.7)


def _patches(rng, n=1500, n_patches=40, size=150):
    xy = rng.uniform(size=(n, 2))
    centres = rng.choice(n, n_patches, replace=False)
    idx = [np.argsort(np.linalg.norm(xy - xy[c], axis=1))[:size] for c in centres]
    idx[0] = np.union1d(idx[0], np.setdiff1d(np.arange(n), np.concatenate(idx)))  # cover every cell
    coords = [xy[ix] * rng.uniform(0.5, 2) + rng.normal(0, 0.01, (len(ix), 2)) for ix in idx]
    return checked_patches(idx, coords, n)


def test_blockwise_statistics_equal_one_block(rng):
    """The blocks only bound memory: edge and overlap statistics are those of one pass."""
    idx, y = _patches(rng)
    n, n_p = 1500, len(idx)
    edges = patch_edge_table(idx, y, 10, 2, np.random.default_rng(1))
    assert edges[1].dtype == np.int32
    assert (edges[1] < edges[2]).all()
    scales = PatchScales(rng.normal(0, 0.1, n_p), np.zeros(n_p), rng.uniform(0.2, 1, n_p), 0.0)
    whole = _edge_statistics(edges, scales, n)
    blocks = _edge_statistics(edges, scales, n, block_rows=997)
    for a, b in zip(whole, blocks, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # against the definition, on one edge measured by several patches
    key = edges[1] * np.int64(n) + edges[2]
    many = np.flatnonzero(whole[3] >= 3)[0]
    rows = key == whole[0][many]
    _, med, _, _ = _weighted_median_by_group(
        np.zeros(rows.sum()), edges[3][rows] + scales.log_scale[edges[0][rows]], scales.reliability[edges[0][rows]]
    )
    assert whole[1][many] == med[0]
    pa, pb = np.triu_indices(n_p, 1)
    one = _overlap_log_ratios(idx, y, pa, pb, np.random.default_rng(2))
    split = _overlap_log_ratios(idx, y, pa, pb, np.random.default_rng(2), block_rows=300)
    np.testing.assert_allclose(one[0], split[0], rtol=1e-12)
    np.testing.assert_allclose(one[1], split[1], rtol=1e-12)
    assert np.count_nonzero(one[0]) > 10
