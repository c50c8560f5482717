import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy.linalg import orthogonal_procrustes
from sklearn.manifold import trustworthiness as sk_trustworthiness

import gearsx as gx
from gearsx.geometry import gauge_fix, procrustes

KEYS = ["spearman", "pearson", "stress1", "edge_auc", "bap", "shell_f1", "trust20", "cont20", "swd", "w1_knn"]
PERFECT = {
    "spearman": 1.0,
    "pearson": 1.0,
    "stress1": 0.0,
    "edge_auc": 1.0,
    "bap": 1.0,
    "shell_f1": 1.0,
    "trust20": 1.0,
    "cont20": 1.0,
    "swd": 0.0,
    "w1_knn": 0.0,
}


def _tissue_like(rng, n=600):
    # Clustered, anisotropic cloud: less symmetric than a uniform square.
    centres = rng.uniform(0, 10, (6, 2))
    x = centres[rng.integers(0, 6, n)] + rng.normal(0, 1.0, (n, 2))
    return x * np.array([1.0, 0.6])


def _random_similarity(rng, x):
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    reflect = np.diag([1.0, -1.0])
    return 3.7 * x @ rot @ reflect + rng.normal(0, 50, 2)


def test_perfect_on_identity(rng):
    x = _tissue_like(rng)
    scores = gx.metrics.evaluate_geometry(x, x)
    assert list(scores) == KEYS
    for key, value in PERFECT.items():
        assert scores[key] == pytest.approx(value, abs=1e-9), key


def test_invariant_to_similarity_transforms(rng):
    x = _tissue_like(rng)
    pred = x + rng.normal(0, 0.3, x.shape)
    base = gx.metrics.evaluate_geometry(pred, x)
    moved_pred = gx.metrics.evaluate_geometry(_random_similarity(rng, pred), x)
    moved_gt = gx.metrics.evaluate_geometry(pred, _random_similarity(rng, x))
    for key in KEYS:
        assert moved_pred[key] == pytest.approx(base[key], rel=1e-6, abs=1e-9), key
        assert moved_gt[key] == pytest.approx(base[key], rel=1e-6, abs=1e-9), key
    # A noisy prediction is good but not perfect: the metrics can tell.
    assert 0.8 < base["spearman"] < 0.999
    assert base["stress1"] > 0.01


def test_lattice_ground_truth_scores_the_same_in_any_units_and_at_any_origin(rng):
    """On a spot lattice many true distances equal R20 (or a multiple of it) exactly: rounding must not pick their side."""
    i, j = np.meshgrid(np.arange(50), np.arange(40))
    x = np.column_stack([(i + 0.5 * (j % 2)).ravel(), (j * np.sqrt(3) / 2).ravel()])
    pred = x + rng.normal(0, 0.7, x.shape)
    base = gx.metrics.evaluate_geometry(pred, x)
    for scale, shift in [(0.01, 0.0), (137.3, 0.0), (1.0, 12345.6), (0.37, -88.1)]:
        moved = gx.metrics.evaluate_geometry(pred * scale + shift, x * scale + shift)
        for key in ("edge_auc", "bap", "shell_f1", "trust20", "cont20"):
            assert moved[key] == pytest.approx(base[key], rel=1e-9, abs=1e-12), (scale, shift, key)


def test_near_chance_for_random_permutation(rng):
    x = _tissue_like(rng, n=1500)
    scores = gx.metrics.evaluate_geometry(rng.permutation(x), x)
    assert abs(scores["spearman"]) < 0.05
    assert abs(scores["pearson"]) < 0.05
    assert scores["edge_auc"] == pytest.approx(0.5, abs=0.03)
    assert scores["bap"] == pytest.approx(0.5, abs=0.03)
    assert scores["trust20"] == pytest.approx(0.5, abs=0.03)
    assert scores["cont20"] == pytest.approx(0.5, abs=0.03)
    assert scores["stress1"] > 0.3


def test_monotone_in_noise(rng):
    x = _tissue_like(rng)
    worse = [gx.metrics.evaluate_geometry(x + rng.normal(0, s, x.shape), x) for s in (0.1, 0.5, 2.0)]
    for key in ("spearman", "edge_auc", "trust20", "cont20", "shell_f1"):
        assert worse[0][key] > worse[1][key] > worse[2][key], key
    assert worse[0]["stress1"] < worse[1]["stress1"] < worse[2]["stress1"]


@pytest.mark.parametrize("k", [5, 20])
def test_trustworthiness_matches_sklearn(rng, k):
    x = _tissue_like(rng, n=400)
    pred = x + rng.normal(0, 0.8, x.shape)
    # gearsx counts distances within a millionth of the extent as tied, not closer (lattices; see the test
    # above): on this cloud a handful of ranks move by one, about 3e-7 each
    trust, cont = gx.metrics.trustworthiness(pred, x, k=k), gx.metrics.continuity(pred, x, k=k)
    assert trust == pytest.approx(sk_trustworthiness(x, pred, n_neighbors=k), rel=0, abs=1e-5)
    assert cont == pytest.approx(sk_trustworthiness(pred, x, n_neighbors=k), rel=0, abs=1e-5)


@pytest.mark.parametrize("grid", [6, 12])
def test_tied_positions_score_as_scikit_learn_averaged_over_their_orders(grid):
    """Cells snapped to a few centres (as a tool that puts each cell at a spot's centre does) tie in distance.

    Each tie is worth the mean over the orders of its cells: scikit-learn's value averaged over random
    orders of the tied cells (a jitter far below the spacing) is the reference. Counting a tied cell as
    closer than the k-th neighbour gave continuity 0.999-1.0003 here, above its maximum of 1.
    """
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(1500, 2))
    pred = np.floor(x * grid) / grid
    draws = []
    for r in range(12):
        jittered = pred + np.random.default_rng(r).normal(scale=1e-9, size=pred.shape)
        draws.append([sk_trustworthiness(x, jittered, n_neighbors=20), sk_trustworthiness(jittered, x, n_neighbors=20)])
    draws = np.array(draws)
    ours = [gx.metrics.trustworthiness(pred, x), gx.metrics.continuity(pred, x)]
    # the draws' spread is 1e-4 to 3e-4; the old continuity was 0.02 off at grid=6
    np.testing.assert_allclose(ours, draws.mean(0), atol=6e-4, rtol=0)
    assert max(ours) < 1.0


def _dense_trust(high, low, k, order):
    """scikit-learn's trustworthiness ``(high, low)``, written densely, with ties ranked as gearsx documents.

    Among cells at one distance from cell i, a tie that reaches the k-th place is ordered by ``order``
    (each cell's place in one random order); a tie wholly past it counts at its mean rank.
    """
    from scipy.spatial.distance import cdist

    n = len(high)
    d_low = np.round(cdist(low, low), 9)
    np.fill_diagonal(d_low, np.inf)
    near_low = np.lexsort((np.broadcast_to(order, d_low.shape), d_low), axis=1)[:, :k]
    d_high = np.round(cdist(high, high), 9)
    np.fill_diagonal(d_high, np.inf)
    total = 0.0
    for i in range(n):
        for j in near_low[i]:
            closer, tie = (d_high[i] < d_high[i, j]).sum(), d_high[i] == d_high[i, j]
            before = (tie.sum() - 1) / 2 if closer >= k else (tie & (order < order[j])).sum()
            total += max(closer + 1 + before - k, 0)
    return 1 - 2.0 / (n * k * (2 * n - 3 * k - 1)) * total


@pytest.mark.parametrize("trial", range(4))
def test_trustworthiness_with_ties_equals_a_dense_reference(trial):
    """Cells snapped to a few centres, in the prediction or in the truth: a reference written densely agrees."""
    from gearsx.metrics._evaluation import Evaluation

    rng = np.random.default_rng(trial)
    n, k = 150, [5, 12, 20, 30][trial]
    x = rng.uniform(size=(n, 2))
    snapped = rng.uniform(size=(25, 2))[rng.integers(0, 25, n)]
    pred, gt = (snapped, x) if trial % 2 == 0 else (x, snapped)
    perm = Evaluation(pred, gt, k=k, random_state=trial)._rng(4).permutation(n)  # the order the metric draws
    order = np.empty(n, dtype=np.int64)
    order[perm] = np.arange(n)
    trust = gx.metrics.trustworthiness(pred, gt, k=k, random_state=trial)
    cont = gx.metrics.continuity(pred, gt, k=k, random_state=trial)
    assert trust == pytest.approx(_dense_trust(gt, pred, k, order), abs=1e-5)
    assert cont == pytest.approx(_dense_trust(pred, gt, k, order), abs=1e-5)


def test_trustworthiness_of_tied_layouts_does_not_depend_on_the_rows_order():
    """Ties are not broken by row order, which would reward a layout for cells listed in spatial order."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(1200, 2))
    x = x[np.argsort(gx.metrics.morton_order(x))]  # rows in spatial order
    pred = np.floor(x * 6) / 6
    shuffled = rng.permutation(len(x))
    values = [gx.metrics.trustworthiness(pred, x, random_state=s) for s in range(4)]
    values += [gx.metrics.trustworthiness(pred[shuffled], x[shuffled], random_state=s) for s in range(4)]
    assert np.ptp(values) < 5e-4  # the random order of ties moves it by about 1e-4 either way
    assert len(set(values)) > 1  # the order is drawn (from `random_state`), not fixed


def test_collapsed_layouts_score_nan_and_a_collapsed_truth_is_refused(rng):
    x = rng.uniform(size=(200, 2))
    assert np.isnan(gx.metrics.trustworthiness(np.zeros_like(x), x))
    assert np.isnan(gx.metrics.continuity(np.zeros_like(x), x))
    with pytest.raises(ValueError, match="no geometry to score against"):
        gx.metrics.continuity(x, np.zeros_like(x))


def test_large_collapsed_layout_is_scored_in_bounded_memory():
    """Neighbour lists of 20,000 cells at one position widened to every cell (a 3 GB matrix) before."""
    x = np.random.default_rng(0).uniform(size=(20_000, 2))
    with pytest.warns(RuntimeWarning, match="collapsed"):
        scores = gx.metrics.evaluate_geometry(np.zeros_like(x), x)
    assert np.isnan(scores["trust20"])
    assert scores["edge_auc"] == pytest.approx(0.5)


def test_three_dimensional_ground_truth(rng):
    x3 = np.column_stack([_tissue_like(rng), rng.normal(0, 0.1, 600)])
    scores = gx.metrics.evaluate_geometry(x3[:, :2], x3)
    assert scores["spearman"] > 0.99
    assert scores["swd"] < 0.05
    assert gx.metrics.trustworthiness(x3[:, :2], x3) == pytest.approx(sk_trustworthiness(x3, x3[:, :2], n_neighbors=20))


def test_sampled_pairs_estimate_exact_values(rng):
    x = _tissue_like(rng, n=1800)
    pred = x + rng.normal(0, 0.5, x.shape)
    exact = gx.metrics.evaluate_geometry(pred, x)
    sampled = gx.metrics.evaluate_geometry(pred, x, n_pairs=200_000, random_state=3)
    for key in ("spearman", "pearson", "stress1", "edge_auc", "bap", "shell_f1"):
        assert sampled[key] == pytest.approx(exact[key], abs=0.01), key
    # the sampled path really differs from the exact one (it is a sample)
    assert sampled["spearman"] != exact["spearman"]


def test_large_input_uses_sampling_and_is_reproducible(rng):
    x = rng.uniform(0, 100, (30_000, 2))
    pred = x + rng.normal(0, 1.0, x.shape)
    a = gx.metrics.evaluate_geometry(pred, x, random_state=1)
    b = gx.metrics.evaluate_geometry(pred, x, random_state=1)
    assert a == b
    assert a["spearman"] > 0.99
    assert 0.9 < a["trust20"] < 1.0


def test_edge_scores_and_shell_f1_standalone(rng):
    x = _tissue_like(rng)
    assert gx.metrics.edge_scores(x, x) == {"edge_auc": 1.0, "bap": 1.0}
    assert gx.metrics.shell_f1(x, x, shells=(0.5, 1.0, 3.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shells"):
        gx.metrics.shell_f1(x, x, shells=(2.0, 1.0))


def test_single_metric_functions_agree_with_evaluate(rng):
    x = _tissue_like(rng)
    pred = x + rng.normal(0, 0.5, x.shape)
    full = gx.metrics.evaluate_geometry(pred, x)
    assert gx.metrics.distance_correlation(pred, x) == pytest.approx(full["spearman"])
    assert gx.metrics.distance_correlation(pred, x, method="pearson") == pytest.approx(full["pearson"])
    assert gx.metrics.stress1(pred, x) == pytest.approx(full["stress1"])
    assert gx.metrics.sliced_wasserstein(pred, x) == pytest.approx(full["swd"])
    assert gx.metrics.knn_distance_w1(pred, x) == pytest.approx(full["w1_knn"])
    with pytest.raises(ValueError, match="method"):
        gx.metrics.distance_correlation(pred, x, method="kendall")


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (np.zeros((50, 2)), np.zeros((40, 2)), "same cells"),
        (np.full((50, 2), np.nan), np.zeros((50, 2)), "NaN or inf"),
        (np.zeros(50), np.zeros((50, 2)), "2-D array"),
        (np.zeros((10, 2)), np.zeros((10, 2)), "at least k \\+ 1"),
    ],
)
def test_bad_input_raises(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        gx.metrics.evaluate_geometry(pred, gt)


def test_too_few_points_for_trustworthiness(rng):
    x = rng.normal(size=(30, 2))
    with pytest.raises(ValueError, match="k < n/2"):
        gx.metrics.trustworthiness(x, x, k=20)


def test_evaluate_adata(rng):
    x = _tissue_like(rng, n=300)
    adata = AnnData(np.zeros((300, 3), dtype=np.float32))
    adata.obsm["spatial_gt"] = x
    adata.obsm["pred"] = x * 2
    df = gx.metrics.evaluate_adata(adata, "pred", "spatial_gt")
    assert isinstance(df, pd.DataFrame)
    assert df.shape == (1, len(KEYS) + 2)
    assert df.loc["pred", "spearman"] == pytest.approx(1.0)
    assert df.loc["pred", "n_slides"] == 1
    with pytest.raises(KeyError, match="pred_key"):
        gx.metrics.evaluate_adata(adata, "missing", "spatial_gt")


def test_evaluate_adata_scores_sections_apart(rng, caplog):
    # two sections whose true positions share one frame: each is reconstructed exactly (up to its own
    # shift), so per section every distance is right, while distances across sections are not
    x = _tissue_like(rng, n=300)
    adata = AnnData(np.zeros((600, 3), dtype=np.float32))
    adata.obs["slide"] = np.repeat(["a", "b"], 300)
    adata.obsm["spatial_gt"] = np.r_[x, x[::-1]]
    adata.obsm["pred"] = np.r_[x, x[::-1] + 50.0]
    with caplog.at_level("WARNING", logger="gearsx"):
        pooled = gx.metrics.evaluate_adata(adata, "pred", "spatial_gt")
    assert "obs['slide']" in caplog.text
    assert "slide_key='slide'" in caplog.text
    apart = gx.metrics.evaluate_adata(adata, "pred", "spatial_gt", slide_key="slide")
    assert apart.loc["pred", "spearman"] == pytest.approx(1.0)
    assert pooled.loc["pred", "spearman"] < 0.9
    assert apart.loc["pred", "n_slides"] == 2
    # the mean of the sections evaluated one by one
    one = gx.metrics.evaluate_adata(adata[:300].copy(), "pred", "spatial_gt")
    other = gx.metrics.evaluate_adata(adata[300:].copy(), "pred", "spatial_gt")
    assert apart.loc["pred", "trust20"] == pytest.approx(
        (one.loc["pred", "trust20"] + other.loc["pred", "trust20"]) / 2
    )
    with pytest.raises(KeyError, match="slide_key"):
        gx.metrics.evaluate_adata(adata, "pred", "spatial_gt", slide_key="nope")


def test_gauge_fix_and_procrustes(rng):
    x = rng.normal(size=(100, 2)) * 5 + 3
    y = gauge_fix(x)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)
    assert np.sqrt((y**2).sum(1).mean()) == pytest.approx(1.0)
    target = rng.normal(size=(100, 3))
    source = target @ np.linalg.qr(rng.normal(size=(3, 3)))[0] + 0.01 * rng.normal(size=(100, 3))
    r = procrustes(source, target)
    np.testing.assert_allclose(r, orthogonal_procrustes(source, target)[0], atol=1e-10)
    # Without reflections the solution is a proper rotation, even when a reflection would fit better.
    mirrored = target * np.array([1.0, 1.0, -1.0])
    r_rot = procrustes(mirrored, target, reflection=False)
    assert np.linalg.det(r_rot) == pytest.approx(1.0)
    assert np.linalg.det(procrustes(mirrored, target)) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        procrustes(source, target[:10])


def test_knn_overlap_counts_every_spot_tied_with_the_kth_neighbour_on_a_lattice():
    """Known answer: on a square grid an embedding that is the grid itself, slightly jittered, keeps every
    neighbourhood (its nearest spots are all at the grid's nearest distances), whichever tied spots the
    physical search happened to list; a scrambled embedding does not."""
    import gearsx as gx

    grid = np.stack(np.meshgrid(np.arange(30.0), np.arange(30.0)), -1).reshape(-1, 2)
    jitter = grid + np.random.default_rng(0).normal(scale=1e-4, size=grid.shape)
    # k=6: four neighbours at distance 1, then two of the four diagonal ones (all at sqrt 2)
    assert gx.metrics.knn_overlap(jitter, grid, k=6) == 1.0
    assert gx.metrics.knn_overlap(jitter, grid, k=20) == 1.0
    scrambled = jitter[np.random.default_rng(1).permutation(len(grid))]
    assert gx.metrics.knn_overlap(scrambled, grid, k=6) < 0.1


def test_knn_overlap_counts_the_nearest_neighbour():
    """Each point's own nearest neighbour counts (scikit-learn already leaves the query point out)."""
    import gearsx as gx

    xy = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0], [15.0, 0.0]])
    # k=1 in a layout where every point keeps its nearest neighbour: perfect overlap with the truth
    assert gx.metrics.knn_overlap(xy * 2, xy, k=1) == 1.0
    # swap the order on the line so that no point keeps its nearest neighbour
    shuffled = xy[[2, 4, 0, 1, 3]]
    brute = np.mean(
        [
            np.argsort(np.abs(shuffled[:, 0] - shuffled[i, 0]))[1] == np.argsort(np.abs(xy[:, 0] - xy[i, 0]))[1]
            for i in range(5)
        ]
    )
    assert gx.metrics.knn_overlap(shuffled, xy, k=1) == brute
