import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.neighbors import kneighbors_graph

import gearsx as gx
from gearsx.geometry import best_overlaps, random_walk_patches, stitch_patches
from tests.conftest import shared_file


def _perturbed_patches(xy, patches, rng, *, noise=0.05, corrupted=()):
    """Random pose, reflection and scale per patch, ~5% distance noise, and some scrambled patches."""
    r = np.median(np.sort(np.linalg.norm(xy[:200, None] - xy[None], axis=-1), axis=1)[:, 1])
    out = []
    for p, ix in enumerate(patches):
        y = xy[ix] + rng.normal(0, noise * r, (len(ix), 2))
        if p in corrupted:
            y = rng.permutation(y)
        th = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        if rng.random() < 0.5:
            rot = rot @ np.diag([1.0, -1.0])
        out.append(rng.uniform(0.1, 10.0) * y @ rot + rng.normal(0, 100, 2))
    return out


def test_random_walk_patches_cover_and_overlap(rng):
    xy = rng.uniform(size=(2000, 2))
    graph = kneighbors_graph(xy, 10)
    patches = random_walk_patches(graph, 200, coverage=2, random_state=0)
    counts = np.bincount(np.concatenate(patches), minlength=2000)
    assert counts.min() >= 2
    assert all(len(p) == 200 and len(np.unique(p)) == 200 for p in patches)
    # patches are compact: their spatial extent is far below the tissue's
    assert np.median([np.ptp(xy[p], axis=0).max() for p in patches]) < 0.6
    again = random_walk_patches(graph, 200, coverage=2, random_state=0)
    assert all(np.array_equal(a, b) for a, b in zip(patches, again, strict=True))
    plain = random_walk_patches(graph, 200, coverage=2, revisit=1.0, random_state=0)
    pruned = random_walk_patches(graph, 200, coverage=2, revisit=1.0, prune=True, random_state=0)
    assert np.bincount(np.concatenate(pruned), minlength=2000).min() >= 2  # still covered
    assert len(pruned) < len(plain)  # redundant patches dropped
    assert all(any(np.array_equal(p, q) for q in plain) for p in pruned)  # a subset of the full cover


def test_cover_stays_close_to_the_requested_coverage(rng):
    # a mutual kNN graph has low-degree cells that a plain walk reaches last (coupon-collector tail)
    xy = rng.uniform(size=(3000, 2))
    knn = kneighbors_graph(xy, 10)
    graph = knn.minimum(knn.T)
    plain = random_walk_patches(graph, 200, coverage=2, revisit=1.0, random_state=0)
    frontier = random_walk_patches(graph, 200, coverage=2, random_state=0)
    cov_plain = np.bincount(np.concatenate(plain), minlength=3000)
    cov_frontier = np.bincount(np.concatenate(frontier), minlength=3000)
    assert cov_frontier.min() >= 2
    # fewer patches for the same coverage (about 0.8x; averaged over seeds, one cover is noisy)
    ratios = [
        len(random_walk_patches(graph, 200, coverage=2, random_state=s))
        / len(random_walk_patches(graph, 200, coverage=2, revisit=1.0, random_state=s))
        for s in range(4)
    ]
    assert np.mean(ratios) < 0.87
    assert np.quantile(cov_frontier, 0.9) < np.quantile(cov_plain, 0.9)
    # still compact blobs
    assert np.median([np.ptp(xy[p], axis=0).max() for p in frontier]) < 0.6


def test_min_overlap_is_guaranteed(rng):
    xy = rng.uniform(size=(2000, 2)) * [20.0, 1.0]  # a long strip: neighbouring patches barely overlap
    graph = kneighbors_graph(xy, 8)
    loose = random_walk_patches(graph, 100, coverage=1, random_state=0)
    best, _ = best_overlaps(loose, 2000)
    need = int(best.min()) + 10  # more than the loosest patch shares: the case needs the repair
    assert need < 60
    fixed = random_walk_patches(graph, 100, coverage=1, min_overlap=need, random_state=0)
    best, partner = best_overlaps(fixed, 2000)
    assert best.min() >= need
    assert (partner >= 0).all()
    assert [len(p) for p in fixed[: len(loose)]] == [len(p) for p in loose]
    assert np.bincount(np.concatenate(fixed), minlength=2000).min() >= 1
    # too few spare cells to swap for a large overlap: bridging patches (same size) are added instead
    tight = random_walk_patches(graph, 100, coverage=1, min_overlap=80, random_state=0)
    best, partner = best_overlaps(tight, 2000)
    assert len(tight) > len(loose)
    assert best.min() >= 80
    assert {len(p) for p in tight} == {100}
    assert np.bincount(np.concatenate(tight), minlength=2000).min() >= 1
    with pytest.raises(ValueError, match="min_overlap"):
        random_walk_patches(graph, 100, coverage=1, min_overlap=100, random_state=0)


def test_stitch_recovers_real_layout_and_downweights_corrupted_patches():
    cells = ad.read_h5ad(shared_file("osmfish_mouse_sscortex", "osmfish_mouse_sscortex.h5ad"))
    xy = cells.obsm["spatial"].astype(np.float64)
    rng = np.random.default_rng(0)
    patches = random_walk_patches(kneighbors_graph(xy, 10), 384, coverage=3, random_state=0)
    corrupted = set(rng.choice(len(patches), 4, replace=False).tolist())
    coords = _perturbed_patches(xy, patches, rng, corrupted=corrupted)
    res = stitch_patches(patches, coords, len(xy), random_state=0)
    scores = gx.metrics.evaluate_geometry(res.X, xy)
    rel = res.diagnostics["patch_reliability"]
    clean = np.delete(rel, sorted(corrupted))
    print(
        f"osmFISH stitch: {len(patches)} patches, Spearman {scores['spearman']:.4f}, "
        f"corrupted reliability {rel[sorted(corrupted)]}, clean median {np.median(clean):.3f}"
    )
    assert scores["spearman"] >= 0.95
    assert rel[sorted(corrupted)].max() < 0.1 * np.median(clean)
    assert res.distances.shape == (len(xy), len(xy))
    assert sp.isspmatrix_csr(res.distances)
    assert (res.distances != res.distances.T).nnz == 0
    assert res.diagnostics["n_components"] == 1
    # the stitched distances describe the layout: edges' residuals are small
    assert res.diagnostics["edge_residual_quantiles"]["q50"] < 0.1


def test_stitch_is_invariant_to_patch_poses_and_reproducible(rng):
    xy = rng.uniform(size=(800, 2))
    patches = random_walk_patches(kneighbors_graph(xy, 10), 150, coverage=3, random_state=1)
    a = stitch_patches(patches, [xy[p] for p in patches], 800, random_state=0)
    b = stitch_patches(patches, _perturbed_patches(xy, patches, rng, noise=0.0), 800, random_state=0)
    assert gx.metrics.distance_correlation(a.X, xy) > 0.99
    assert gx.metrics.distance_correlation(b.X, a.X) > 0.999
    c = stitch_patches(patches, [xy[p] for p in patches], 800, random_state=0)
    np.testing.assert_array_equal(a.X, c.X)


def test_large_graph_path_gives_the_layout_of_the_exact_path(rng, monkeypatch):
    # above LARGE_GRAPH cells: geodesics over each cell's shortest edges, solve in a Morton cell order
    from gearsx.geometry import _stitch_solve

    xy = rng.uniform(size=(1500, 2)) * [2.0, 1.0]
    patches = random_walk_patches(kneighbors_graph(xy, 10), 150, coverage=3, random_state=1)
    coords = _perturbed_patches(xy, patches, rng)
    exact = stitch_patches(patches, coords, len(xy), random_state=0)
    monkeypatch.setattr(_stitch_solve, "LARGE_GRAPH", 1000)
    monkeypatch.setattr(_stitch_solve, "GEODESIC_EDGES", 4)
    large = stitch_patches(patches, coords, len(xy), random_state=0)
    assert not np.array_equal(large.X, exact.X)  # the other path ran
    for res in (exact, large):
        assert gx.metrics.distance_correlation(res.X, xy) > 0.98
    assert gx.metrics.distance_correlation(large.X, exact.X) > 0.995


def test_disconnected_patches_are_reported_not_collapsed(rng):
    left = rng.uniform(size=(100, 2))
    right = rng.uniform(size=(100, 2)) + [5.0, 0.0]
    xy = np.vstack([left, right])
    patches = [np.arange(100), np.arange(100, 200)]
    with pytest.warns(UserWarning, match="2 connected components"):
        res = stitch_patches(patches, [xy[p] for p in patches], 200)
    assert res.diagnostics["n_components"] == 2
    comp = res.diagnostics["components"]
    assert len(np.unique(comp[:100])) == 1
    assert comp[0] != comp[150]
    # each component keeps its own geometry
    assert gx.metrics.distance_correlation(res.X[:100], left) > 0.99


def test_bad_input(rng):
    xy = rng.uniform(size=(50, 2))
    with pytest.raises(ValueError, match="in no patch"):
        stitch_patches([np.arange(40)], [xy[:40]], 50)
    with pytest.raises(ValueError, match="indices for"):
        stitch_patches([np.arange(50)], [xy[:40]], 50)
    with pytest.raises(ValueError, match="outside"):
        stitch_patches([np.arange(50) + 1], [xy], 50)
    with pytest.raises(ValueError, match="repeats"):
        stitch_patches([np.r_[np.arange(49), 0]], [xy], 50)
    with pytest.raises(ValueError, match="NaN"):
        stitch_patches([np.arange(50)], [np.full((50, 2), np.nan)], 50)
    with pytest.raises(ValueError, match="equal length"):
        stitch_patches([np.arange(50)], [], 50)
    with pytest.raises(ValueError, match="n_communities"):
        stitch_patches([np.arange(50)], [xy], 50, n_communities=0)


def test_align_communities_recovers_known_similarities_and_reflections(rng):
    """Three overlapping views of one point set, each rotated, scaled, shifted (one mirrored):
    the alignment puts them back into one frame exactly (up to one similarity)."""
    from gearsx.geometry._stitch_communities import align_communities

    xy = rng.uniform(size=(300, 2)) * [3.0, 1.0]
    cells = [
        np.flatnonzero(xy[:, 0] < 1.3),
        np.flatnonzero((xy[:, 0] > 1.0) & (xy[:, 0] < 2.3)),
        np.flatnonzero(xy[:, 0] > 2.0),
    ]
    layouts = []
    for g, c in enumerate(cells):
        th = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        if g == 1:
            rot = rot @ np.diag([1.0, -1.0])
        layouts.append(rng.uniform(0.2, 5.0) * xy[c] @ rot + rng.normal(0, 10, 2))
    pos, count, c, _ = align_communities(layouts, cells, 300)
    assert c[0] == 1.0  # the first community is the gauge
    np.testing.assert_array_equal(count, np.bincount(np.concatenate(cells), minlength=300))
    from scipy.spatial import procrustes

    assert procrustes(xy, pos)[2] < 1e-16  # disparity after the best similarity: none


def test_stitch_by_communities_recovers_the_layout_of_one_stitch(rng):
    """Patches in random poses (half mirrored): stitched as 4 communities and aligned, the layout is the
    planted one, as with one stitch; the communities partition the patches and their cells overlap."""
    xy = rng.uniform(size=(2400, 2)) * [3.0, 1.0]
    patches = random_walk_patches(kneighbors_graph(xy, 10), 150, coverage=2, random_state=1)
    coords = _perturbed_patches(xy, patches, rng, noise=0.02)
    one = stitch_patches(patches, coords, 2400, random_state=0)
    four = stitch_patches(patches, coords, 2400, n_communities=4, random_state=0)
    d = four.diagnostics
    assert d["n_communities"] == 4
    assert sum(d["community_sizes"]) > 2400  # neighbouring communities share cells
    assert len(d["patch_reliability"]) == len(patches)
    assert gx.metrics.distance_correlation(four.X, xy) > 0.99
    assert gx.metrics.distance_correlation(four.X, xy) > gx.metrics.distance_correlation(one.X, xy) - 0.005
    assert four.distances.shape == (2400, 2400)
    assert (four.distances != four.distances.T).nnz == 0
    again = stitch_patches(patches, coords, 2400, n_communities=4, random_state=0)
    np.testing.assert_array_equal(again.X, four.X)


def test_communities_that_share_no_cells_are_laid_side_by_side(rng):
    left = rng.uniform(size=(300, 2))
    right = rng.uniform(size=(300, 2)) + [5.0, 0.0]
    xy = np.vstack([left, right])
    graph = sp.block_diag([kneighbors_graph(left, 8), kneighbors_graph(right, 8)]).tocsr()
    patches = random_walk_patches(graph, 80, coverage=2, random_state=0)
    coords = _perturbed_patches(xy, patches, rng, noise=0.0)
    with pytest.warns(UserWarning, match="share no cells"):
        res = stitch_patches(patches, coords, 600, n_communities=2, random_state=0)
    assert res.diagnostics["n_components"] == 2
    x = res.X
    assert x[:300, 0].max() < x[300:, 0].min() or x[300:, 0].max() < x[:300, 0].min()  # apart, not on top
    assert gx.metrics.distance_correlation(x[:300], left) > 0.99
    assert gx.metrics.distance_correlation(x[300:], right) > 0.99


def test_cover_helpers_name_what_is_wrong():
    """Arguments that failed deep in numpy/SciPy, or (restart=1) made the cover walk forever."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(100, 2))
    graph = kneighbors_graph(xy, 6, include_self=False)
    graph = (graph + graph.T).tocsr()
    with pytest.raises(ValueError, match="`restart` must be below 1"):
        random_walk_patches(graph, 20, restart=1.0)
    with pytest.raises(ValueError, match=r"`revisit` must be a number in \[0, 1\]"):
        random_walk_patches(graph, 20, revisit=-0.5)
    with pytest.raises(ValueError, match="square"):
        random_walk_patches(graph[:, :90], 20)
    with pytest.raises(IndexError, match="Patch 1 has indices outside"):
        best_overlaps([np.arange(10), np.arange(5, 300)], 100)
    patches = random_walk_patches(graph, 30, random_state=0)
    coords = [xy[p] for p in patches]
    # the residuals: zero for patches that are exact copies of the layout, and clear errors otherwise
    np.testing.assert_allclose(gx.geometry.patch_residuals(patches, coords, xy), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="Patch 0: 30 indices for 29 coordinate rows"):
        gx.geometry.patch_residuals(patches, [coords[0][:-1], *coords[1:]], xy)
    with pytest.raises(ValueError, match="must pair up"):
        gx.geometry.patch_residuals(patches, coords[:-1], xy)
    with pytest.raises(ValueError, match="2-D"):
        gx.geometry.shuffled(np.arange(10))
