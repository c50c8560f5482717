import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import gearsx as gx


@pytest.fixture
def halves():
    xy = np.random.default_rng(0).uniform(size=(300, 2))
    adata = ad.AnnData(np.zeros((300, 2), dtype=np.float32))
    adata.obsm["spatial_gt"] = xy
    idx = [np.flatnonzero(xy[:, 0] < 0.6), np.flatnonzero(xy[:, 0] > 0.4)]
    return adata, [(i, 7.0 * xy[i] @ np.array([[0.0, 1.0], [1.0, 0.0]])) for i in idx]


def test_stitch_writes_slots(halves, tmp_path):
    adata, patches = halves
    assert gx.tl.stitch(adata, patches) is None
    assert adata.obsm["X_gears_spatial"].shape == (300, 2)
    assert sp.isspmatrix_csr(adata.obsp["gears_distances"])
    assert sp.isspmatrix_csr(adata.obsp["gears_connectivities"])
    uns = adata.uns["gears"]
    assert uns["params"]["n_patches"] == 2
    assert uns["params"]["version"] == gx.__version__
    assert "patch_reliability" in uns["diagnostics"]
    assert gx.metrics.distance_correlation(adata.obsm["X_gears_spatial"], adata.obsm["spatial_gt"]) > 0.99
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_allclose(back.obsm["X_gears_spatial"], adata.obsm["X_gears_spatial"])


def test_copy_and_key_added(halves):
    adata, patches = halves
    out = gx.tl.stitch(adata, patches, key_added="run2", copy=True)
    assert "X_run2_spatial" in out.obsm
    assert "run2_distances" in out.obsp
    assert "X_run2_spatial" not in adata.obsm  # the input is untouched


def test_bad_patches(halves):
    adata, _ = halves
    with pytest.raises(ValueError, match="patches"):
        gx.tl.stitch(adata, [])
    halves_list = [(np.arange(50), np.random.default_rng(0).uniform(size=(50, 2)))]
    with pytest.raises(ValueError, match="n_communities"):
        gx.tl.stitch(adata, halves_list, n_communities=0)
    assert "X_gears_spatial" not in adata.obsm  # nothing written on bad input
