"""The stitch's large-scale pieces against plain references: compiled stress, cell order, geodesic subgraph, blockwise statistics, scale."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from gearsx.geometry import _stitch_solve
from gearsx.geometry._compiled import compiled
from gearsx.geometry._order import sort_within_groups
from gearsx.geometry._stitch_scales import (
    PatchScales,
    _edge_statistics,
    _overlap_log_ratios,
    _weighted_median_by_group,
    checked_patches,
    patch_edge_table,
)
from gearsx.geometry._stitch_solve import (
    _edge_scale,
    _huber_loss_grad,
    _huber_stress_solve,
    _huber_stress_solve_ordered,
    _local_order,
    _shortest_edges,
)


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
    kernel = compiled(_huber_loss_grad)
    grad = np.zeros((n, 2))
    f = kernel(x, i, j, d, inv_u, wu, wl, 0.1, grad, 0, m)
    f_ref, g_ref = _reference_huber(x, i, j, d, inv_u, wu, wl, 0.1)
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(grad, g_ref, rtol=1e-10, atol=1e-14)
    # and it is the gradient of the loss
    h, (a, c) = 1e-6, (3, 1)
    xp, xm = x.copy(), x.copy()
    xp[a, c] += h
    xm[a, c] -= h
    fd = (
        kernel(xp, i, j, d, inv_u, wu, wl, 0.1, np.zeros((n, 2)), 0, m)
        - kernel(xm, i, j, d, inv_u, wu, wl, 0.1, np.zeros((n, 2)), 0, m)
    ) / (2 * h)
    assert grad[a, c] == pytest.approx(fd, rel=1e-5, abs=1e-9)
    # blocks of edges add up to the whole (the threaded solve sums them)
    g1, g2 = np.zeros((n, 2)), np.zeros((n, 2))
    f12 = kernel(x, i, j, d, inv_u, wu, wl, 0.1, g1, 0, 150) + kernel(x, i, j, d, inv_u, wu, wl, 0.1, g2, 150, m)
    assert f12 == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(g1 + g2, grad, rtol=1e-10, atol=1e-14)


def test_solve_in_morton_order_equals_the_solve_in_the_given_order(rng, monkeypatch):
    monkeypatch.setattr(_stitch_solve, "LARGE_GRAPH", 100)  # the large-graph path on small data
    # cells numbered at random (as barcodes are), edges between spatial neighbours
    xy = rng.uniform(size=(400, 2))
    _, nbr = cKDTree(xy).query(xy, k=7)
    i, j = np.repeat(np.arange(400), 6), nbr[:, 1:].ravel()
    keep = i < j
    i, j = i[keep], j[keep]
    d = np.linalg.norm(xy[i] - xy[j], axis=1)
    w = rng.uniform(0.2, 1.0, len(d))
    x0 = xy + rng.normal(scale=0.05, size=xy.shape)
    order, oi, oj, od, ow = _local_order(x0, i, j, d, w)
    # the renumbering is a permutation, edges keep their lengths and weights and come sorted by first cell
    assert np.array_equal(np.sort(order), np.arange(400))
    assert (oi < oj).all()
    assert (np.diff(oi) >= 0).all()
    back_i, back_j = np.minimum(order[oi], order[oj]), np.maximum(order[oi], order[oj])
    assert sorted(zip(back_i.tolist(), back_j.tolist(), od.tolist(), ow.tolist(), strict=True)) == sorted(
        zip(i.tolist(), j.tolist(), d.tolist(), w.tolist(), strict=True)
    )
    # neighbours are close in the new numbering: far closer than at random
    assert np.median(oj - oi) < 0.1 * np.median(np.abs(j - i))
    kw = {"delta": 0.1, "anchor": 1e-3, "max_iter": 10}  # few steps: float-order differences stay tiny
    plain = _huber_stress_solve_ordered(x0, i, j, d, w, **kw)
    ordered = _huber_stress_solve(x0, i, j, d, w, **kw)  # Morton order, edges summed in threaded blocks
    np.testing.assert_allclose(ordered, plain, atol=1e-9)
    assert np.array_equal(_huber_stress_solve(x0, i, j, d, w, **kw), ordered)  # threads' timing changes nothing
    assert np.abs(plain - x0).max() > 1e-3  # and the solve moved the cells


def test_shortest_edges_keep_each_cells_k_shortest(rng):
    n, k = 300, 4
    i, j = rng.integers(0, n, 3000), rng.integers(0, n, 3000)
    keep = i != j
    g = sp.coo_matrix((rng.uniform(0.1, 1, keep.sum()), (i[keep], j[keep])), shape=(n, n)).tocsr()
    g = g.maximum(g.T).tocsr()  # symmetric, as the stitched graph
    sub = _shortest_edges(g, k)
    assert (sub != sub.T).nnz == 0
    dense, kept = g.toarray(), sub.toarray()
    expected = np.zeros_like(dense, dtype=bool)
    for r in range(n):
        cols = np.flatnonzero(dense[r])
        expected[r, cols[np.argsort(dense[r, cols])[:k]]] = True
    expected |= expected.T
    assert np.array_equal(kept > 0, expected)
    np.testing.assert_array_equal(kept[expected], dense[expected])  # lengths unchanged
    assert sub.nnz < g.nnz


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
    _, med, _, _, _ = _weighted_median_by_group(
        np.zeros(rows.sum()), edges[3][rows] + scales.log_scale[edges[0][rows]], scales.reliability[edges[0][rows]]
    )
    assert whole[1][many] == med[0]
    np.testing.assert_allclose(whole[4][many], scales.reliability[edges[0][rows]].mean(), rtol=1e-12)
    pa, pb = np.triu_indices(n_p, 1)
    one = _overlap_log_ratios(idx, y, pa, pb, np.random.default_rng(2))
    split = _overlap_log_ratios(idx, y, pa, pb, np.random.default_rng(2), block_rows=300)
    np.testing.assert_allclose(one[0], split[0], rtol=1e-12)
    np.testing.assert_allclose(one[1], split[1], rtol=1e-12)
    assert np.count_nonzero(one[0]) > 10


def test_sort_within_groups_equals_lexsort_on_short_and_long_runs_with_ties(rng):
    # runs of 1-5 rows (edges) and of hundreds (patch pairs), values with ties (ties keep input order)
    group = np.r_[rng.integers(0, 3000, 6000), rng.integers(10**12, 10**12 + 4, 2000)].astype(np.int64)
    values = np.round(rng.normal(size=len(group)), 1)
    perm = rng.permutation(len(group))
    group, values = group[perm], values[perm]
    np.testing.assert_array_equal(sort_within_groups(group, values), np.lexsort((values, group)))
