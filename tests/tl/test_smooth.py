"""gx.tl.spatial_smooth: identity at k=0, agreement with a brute-force reference, slides kept apart,
better domains from noisy features, errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

import gearsx as gx
from gearsx.tl._smooth import spatial_smoothing_operator


def _adata(coords, feat, slides=None):
    obs = pd.DataFrame(index=[f"s{i}" for i in range(len(coords))])
    if slides is not None:
        obs["slide"] = pd.Categorical(slides)
    return ad.AnnData(obs=obs, obsm={"spatial": coords, "X_gears": feat})


def test_zero_neighbours_is_identity_and_operator_is_sparse_and_stochastic():
    rng = np.random.default_rng(0)
    xy, x = rng.uniform(size=(500, 2)), rng.normal(size=(500, 8))
    a = _adata(xy, x)
    gx.tl.spatial_smooth(a, n_neighbors=0)
    np.testing.assert_allclose(a.obsm["X_gears_smoothed"], x, rtol=1e-6, atol=1e-6)
    w = spatial_smoothing_operator(xy, 6)
    assert w.nnz == 500 * 7
    np.testing.assert_allclose(np.asarray(w.sum(1)).ravel(), 1.0)
    np.testing.assert_allclose(w.diagonal(), 1 / 7)


def test_positions_at_one_point_are_refused_unless_no_neighbour_is_read():
    x = np.random.default_rng(1).normal(size=(50, 3))
    a = _adata(np.zeros((50, 2)), x)
    gx.tl.spatial_smooth(a, n_neighbors=0)  # the identity reads no position
    np.testing.assert_allclose(a.obsm["X_gears_smoothed"], x, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"puts the 50 spots at 1 distinct position\(s\)"):
        gx.tl.spatial_smooth(a, n_neighbors=6)


def test_matches_brute_force_neighbour_mean():
    rng = np.random.default_rng(1)
    xy, x = rng.uniform(size=(400, 2)), rng.normal(size=(400, 5))
    a = _adata(xy, x)
    gx.tl.spatial_smooth(a, n_neighbors=6, key_added="sm")
    _, idx = NearestNeighbors(n_neighbors=7, algorithm="brute").fit(xy).kneighbors(xy)  # self first
    np.testing.assert_allclose(a.obsm["sm"], x[idx].mean(1), rtol=1e-5, atol=1e-5)
    assert a.uns["sm"]["params"] == {
        "use_rep": "X_gears",
        "n_neighbors": 6,
        "spatial_key": "spatial",
        "version": gx.__version__,
    }
    np.testing.assert_array_equal(a.obsm["X_gears"], x)  # input untouched
    assert len(a.obsp) == 0


def test_slides_sharing_coordinates_are_not_mixed():
    rng = np.random.default_rng(2)
    xy = rng.uniform(size=(300, 2))
    coords = np.vstack([xy, xy])  # two sections in the same coordinate frame
    x = np.r_[np.zeros((300, 3)), np.ones((300, 3))]
    a = _adata(coords, x, slides=["a"] * 300 + ["b"] * 300)
    gx.tl.spatial_smooth(a, n_neighbors=6, slide_key="slide")
    np.testing.assert_allclose(a.obsm["X_gears_smoothed"], x, atol=1e-6)
    mixed = gx.tl.spatial_smooth(a, n_neighbors=6, copy=True).obsm["X_gears_smoothed"]
    assert np.abs(mixed - x).max() > 0.1  # without slide_key the duplicated positions do mix


def test_smoothing_turns_noisy_features_into_contiguous_domains():
    """Three bands on a grid; per-spot features = band mean + noise twice as large as the gap."""
    g = np.stack(np.meshgrid(np.arange(60), np.arange(30)), -1).reshape(-1, 2).astype(float)
    truth = np.digitize(g[:, 0], [20, 40])
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 10))
    x = centers[truth] + rng.normal(scale=2.0, size=(len(g), 10))
    a = _adata(g, x)
    gx.tl.spatial_smooth(a, n_neighbors=8)
    for rep, key in (("X_gears", "raw"), ("X_gears_smoothed", "smooth")):
        gx.tl.cluster_domains(a, method="mclust", use_rep=rep, n_clusters=3, n_pcs=None, key_added=key)
    raw = adjusted_rand_score(truth, a.obs["raw"])
    smooth = adjusted_rand_score(truth, a.obs["smooth"])
    assert raw < 0.6
    assert smooth > 0.85
    coherence = gx.metrics.spatial_coherence(a.obs["smooth"].to_numpy(), g)
    assert coherence > gx.metrics.spatial_coherence(a.obs["raw"].to_numpy(), g)


def test_errors_name_the_problem():
    rng = np.random.default_rng(4)
    a = _adata(rng.uniform(size=(20, 2)), rng.normal(size=(20, 3)), slides=["a"] * 17 + ["b"] * 3)
    with pytest.raises(KeyError, match="spatial_key='xy'"):
        gx.tl.spatial_smooth(a, spatial_key="xy")
    with pytest.raises(KeyError, match="`slide_key`='batch'"):
        gx.tl.spatial_smooth(a, slide_key="batch")
    with pytest.raises(KeyError, match="use_rep='X_image'"):
        gx.tl.spatial_smooth(a, use_rep="X_image")
    with pytest.raises(ValueError, match="group 'b'; found 3"):
        gx.tl.spatial_smooth(a, n_neighbors=6, slide_key="slide")
    with pytest.raises(ValueError, match="n_neighbors"):
        gx.tl.spatial_smooth(a, n_neighbors=-1)
    a.obsm["spatial"][0, 0] = np.nan
    with pytest.raises(ValueError, match="spatial"):
        gx.tl.spatial_smooth(a)
