import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.neighbors import kneighbors_graph

import gearsx as gx


def _lognorm(adata):
    adata = adata.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    return adata


def test_slots_and_types(small_tissue):
    st, cells = small_tissue
    assert st.obs["slide"].cat.categories.tolist() == ["slide_0", "slide_1", "slide_2"]
    assert {"n_cells", "domain", "cell_type"} <= set(st.obs.columns)
    assert st.obsm["spatial"].shape == (st.n_obs, 2)
    assert "spatial" not in cells.obsm  # the single cells carry no usable coordinates...
    assert cells.obsm["spatial_gt"].shape == (cells.n_obs, 2)  # ...only the truth, for evaluation
    assert cells.n_obs == 3000
    for a in (st, cells):
        assert sp.isspmatrix_csr(a.X) or sp.issparse(a.X)
        assert a.X.dtype == np.float32
        data = a.X.data
        np.testing.assert_array_equal(data, np.round(data))  # integer counts
        assert (data > 0).all()
        assert list(a.var_names) == list(st.var_names)
    # Spot counts are per-type cell counts that add up to the number of cells per spot.
    counts = st.obsm["spot_cell_counts"]
    assert isinstance(counts, pd.DataFrame)
    np.testing.assert_array_equal(counts.to_numpy().sum(1), st.obs["n_cells"].to_numpy())
    assert st.obs_names.is_unique
    assert cells.obs_names.is_unique


def test_visium_geometry(small_tissue):
    st, _ = small_tissue
    xy = st.obsm["spatial"][st.obs["slide"] == "slide_0"]
    d, _ = __import__("scipy.spatial", fromlist=["cKDTree"]).cKDTree(xy).query(xy, k=2)
    # Hexagonal array with 100 µm centre-to-centre distance at 1.6 px/µm.
    np.testing.assert_allclose(np.median(d[:, 1]), 160.0, rtol=1e-6)
    assert (st.obsm["spatial"] > 0).all()


def test_deterministic_and_seed_dependent():
    a_st, a_sc = gx.datasets.simulate_tissue(n_cells_per_slide=1500, n_genes=40, random_state=7)
    b_st, b_sc = gx.datasets.simulate_tissue(n_cells_per_slide=1500, n_genes=40, random_state=7)
    c_st, _ = gx.datasets.simulate_tissue(n_cells_per_slide=1500, n_genes=40, random_state=8)
    assert (a_st.X != b_st.X).nnz == 0
    assert (a_sc.X != b_sc.X).nnz == 0
    np.testing.assert_array_equal(a_st.obsm["spatial"], b_st.obsm["spatial"])
    np.testing.assert_array_equal(a_sc.obsm["spatial_gt"], b_sc.obsm["spatial_gt"])
    assert a_st.shape != c_st.shape or (a_st.X != c_st.X).nnz > 0
    # The single-cell section has its own stream: its size does not change the slides.
    d_st, _ = gx.datasets.simulate_tissue(n_cells_per_slide=1500, n_genes=40, n_sc_cells=100, random_state=7)
    assert (a_st.X != d_st.X).nnz == 0


def test_batch_effect_is_detectable(small_tissue):
    st, _ = small_tissue
    res = gx.metrics.slide_separability(_lognorm(st), slide_key="slide")
    assert res["chance"] == pytest.approx(1 / 3)
    assert res["balanced_accuracy"] > 0.9
    # Without the capture-efficiency batch effect the slides are (nearly) indistinguishable.
    flat, _ = gx.datasets.simulate_tissue(n_cells_per_slide=6000, n_genes=120, batch_strength=0.0, random_state=0)
    assert gx.metrics.slide_separability(_lognorm(flat), slide_key="slide")["balanced_accuracy"] < 0.6


def _morans_i(adata, coords):
    adata = _lognorm(adata)
    graph = kneighbors_graph(coords, 6, include_self=False)
    # the graph and the genes' values passed as such: scanpy 1.12 reads an AnnData's graph from uns['neighbors']
    values = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X).T
    return pd.Series(sc.metrics.morans_i(graph, values), index=adata.var["gene_kind"].astype(str).to_numpy())


def test_spatially_variable_genes_have_high_morans_i(small_tissue):
    st, cells = small_tissue
    s0 = st[st.obs["slide"] == "slide_0"]
    for moran in (_morans_i(s0, s0.obsm["spatial"]), _morans_i(cells, cells.obsm["spatial_gt"])):
        by_kind = moran.groupby(level=0).mean()
        assert by_kind["gradient"] > 0.3
        assert by_kind["domain_marker"] > 0.2
        assert abs(by_kind["housekeeping"]) < 0.05
        assert moran.max() > 0.5


def test_domains_are_spatially_coherent(small_tissue):
    _, cells = small_tissue
    xy = cells.obsm["spatial_gt"]
    nn = kneighbors_graph(xy, 10, include_self=False).indices.reshape(-1, 10)
    dom = cells.obs["domain"].cat.codes.to_numpy()
    assert (dom[nn] == dom[:, None]).mean() > 0.8  # neighbours share the domain
    assert cells.obs["domain"].nunique() == 6


@pytest.mark.parametrize(("layout", "spacing"), [("st", 320.0), ("cells", None)])
def test_other_layouts(layout, spacing):
    st, _ = gx.datasets.simulate_tissue(n_slides=2, n_cells_per_slide=3000, n_genes=30, spot_layout=layout)
    xy = st.obsm["spatial"][st.obs["slide"] == "slide_0"]
    if layout == "cells":
        assert st.n_obs == 6000
        assert (st.obs["n_cells"] == 1).all()
    else:
        d, _ = __import__("scipy.spatial", fromlist=["cKDTree"]).cKDTree(xy).query(xy, k=2)
        np.testing.assert_allclose(np.median(d[:, 1]), spacing, rtol=1e-6)


def test_h5ad_roundtrip(small_tissue, tmp_path):
    import anndata as ad

    st, cells = small_tissue
    for a, name in ((st, "st"), (cells, "sc")):
        a.write_h5ad(tmp_path / f"{name}.h5ad")
        back = ad.read_h5ad(tmp_path / f"{name}.h5ad")
        assert back.uns["gears_simulation"]["params"]["n_slides"] == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_slides": 0}, "n_slides"),
        ({"spot_layout": "slide-seq"}, "spot_layout"),
        ({"batch_strength": -1.0}, "batch_strength"),
        ({"n_genes": 2}, "n_genes"),
        ({"depth": 0.0}, "depth"),
        ({"sc_depth": float("nan")}, "sc_depth"),
        ({"dispersion": float("inf")}, "large value such as 1e6"),  # was numpy's "lam value too large"
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gx.datasets.simulate_tissue(**kwargs)
