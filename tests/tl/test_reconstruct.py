import numpy as np
import pytest
from sklearn.decomposition import PCA

import gearsx as gx


def test_reconstruct_simulator_beats_pca(trained_encoder, trained_gears):
    sc = trained_encoder[1][:3000].copy()
    _, geo = trained_gears
    before = set(sc.obsm) | set(sc.obsp) | set(sc.uns)
    gx.tl.reconstruct(sc, geo, progress=False)
    assert before <= set(sc.obsm) | set(sc.obsp) | set(sc.uns)  # nothing of the user's was lost
    xy = sc.obsm["X_gears_spatial"]
    assert xy.shape == (3000, 2)
    assert np.isfinite(xy).all()
    assert sc.obsp["gears_distances"].shape == (3000, 3000)
    assert sc.obsp["gears_distances"].nnz > 10 * 3000
    rec = sc.uns["gears"]["reconstruct"]
    assert rec["params"]["smooth_k"] == 50
    assert rec["graph"]["n_components"] == 1
    assert rec["n_patches"] >= 2 * 3000 / 384
    steps = rec["seconds"]  # where the time went, step by step
    assert list(steps) == ["match", "average", "graph", "cover", "predict", "stitch", "fuse"]
    assert all(v >= 0 for v in steps.values())
    m = gx.metrics.evaluate_geometry(xy, sc.obsm["spatial_gt"])
    base = gx.metrics.evaluate_geometry(PCA(2, random_state=0).fit_transform(sc.obsm["X_gears"]), sc.obsm["spatial_gt"])
    print(
        "reconstruction vs PCA:", {k: (round(m[k], 3), round(base[k], 3)) for k in ("spearman", "stress1", "edge_auc")}
    )
    assert m["spearman"] > base["spearman"] + 0.2
    assert m["stress1"] < base["stress1"]
    assert m["edge_auc"] > base["edge_auc"]
    # scanpy composes with the layout
    import scanpy as sc_

    sc_.pp.neighbors(sc, use_rep="X_gears_spatial", n_neighbors=10)
    assert sc.obsp["connectivities"].shape == (3000, 3000)


def test_reconstruct_on_a_view_matches_its_copy_and_leaves_the_parent_alone(trained_encoder, trained_gears):
    """A subset taken without ``.copy()`` (``adata[mask]``) is placed as its copy is, as scanpy treats views."""
    import anndata as ad

    _, geo = trained_gears
    parent = trained_encoder[1][:900].copy()
    before = {slot: set(getattr(parent, slot)) for slot in ("obsm", "obsp", "uns", "layers")}
    mask = np.arange(parent.n_obs) % 3 != 0
    view, copy = parent[mask], parent[mask].copy()
    assert view.is_view
    with pytest.warns(ad.ImplicitModificationWarning):  # scanpy's behaviour: the view becomes its own object
        gx.tl.reconstruct(view, geo, progress=False, random_state=0)
    gx.tl.reconstruct(copy, geo, progress=False, random_state=0)
    assert not view.is_view
    assert view.uns["gears"]["anchor"]["mode"] == copy.uns["gears"]["anchor"]["mode"] == "reference"
    for key in ("X_gears_spatial", "X_gears_anchor", "gears_anchor_spots", "gears_anchor_weights"):
        np.testing.assert_array_equal(view.obsm[key], copy.obsm[key])
    np.testing.assert_array_equal(view.obs["gears_uncertainty"], copy.obs["gears_uncertainty"])
    assert (view.obsp["gears_distances"] != copy.obsp["gears_distances"]).nnz == 0
    assert {slot: set(getattr(parent, slot)) for slot in before} == before  # nothing written to the parent


def test_reconstruct_defaults_take_a_plate_of_a_few_hundred_cells(trained_encoder, trained_gears):
    """Fewer cells than the default patch (384): one patch of all of them, not an error asking for one."""
    st, geo = trained_gears
    cells = trained_encoder[1][:300].copy()
    gx.tl.reconstruct(cells, geo, anchor=None, progress=False, random_state=0)
    rec = cells.uns["gears"]["reconstruct"]
    assert rec["params"]["n_patch"] == 300
    assert rec["n_patches"] >= 1
    same = trained_encoder[1][:300].copy()
    gx.tl.reconstruct(same, geo, n_patch=300, anchor=None, progress=False, random_state=0)
    np.testing.assert_array_equal(cells.obsm["X_gears_spatial"], same.obsm["X_gears_spatial"])
    m = gx.metrics.evaluate_adata(cells, "X_gears_spatial", "spatial_gt")
    assert float(m["spearman"].iloc[0]) > 0.3  # a layout, not noise (the test model is trained briefly)


@pytest.mark.parametrize(("n_cells", "smooth_k"), [(16, 1), (40, 3), (120, 10)])
def test_reconstruct_defaults_take_a_query_of_a_few_dozen_cells(trained_encoder, trained_gears, n_cells, smooth_k):
    """Below 600 cells the average takes one cell in twelve and patches overlap by half, not 50 and 64."""
    _, geo = trained_gears
    cells = trained_encoder[1][:n_cells].copy()
    gx.tl.reconstruct(cells, geo, anchor=None, progress=False, random_state=0)
    params = cells.uns["gears"]["reconstruct"]["params"]
    assert params["smooth_k"] == smooth_k
    assert params["min_overlap"] == min(64, params["n_patch"] // 2)
    assert np.isfinite(cells.obsm["X_gears_spatial"]).all()
    # the defaults are the numbers written down: the same layout when they are passed explicitly
    same = trained_encoder[1][:n_cells].copy()
    kw = {"smooth_k": smooth_k, "min_overlap": params["min_overlap"], "n_patch": params["n_patch"]}
    gx.tl.reconstruct(same, geo, anchor=None, progress=False, random_state=0, **kw)
    np.testing.assert_array_equal(cells.obsm["X_gears_spatial"], same.obsm["X_gears_spatial"])


def test_reconstruct_default_average_keeps_a_small_query_apart(trained_encoder, trained_gears):
    """On 120 cells the default average (10 cells) places them better than the fixed 50 it replaced."""
    _, geo = trained_gears
    scores = {}
    for smooth_k in (None, 50):
        cells = trained_encoder[1][1000:1120].copy()
        gx.tl.reconstruct(cells, geo, anchor=None, smooth_k=smooth_k, progress=False, random_state=0)
        scores[smooth_k] = gx.metrics.evaluate_geometry(cells.obsm["X_gears_spatial"], cells.obsm["spatial_gt"], k=5)
    print({k: round(v["spearman"], 3) for k, v in scores.items()})
    assert scores[None]["spearman"] > scores[50]["spearman"] + 0.05


def test_reconstruct_bad_input(trained_encoder, trained_gears):
    sc = trained_encoder[1][:500].copy()
    st, geo = trained_gears
    with pytest.raises(ValueError, match="n_patch"):
        gx.tl.reconstruct(sc, geo, n_patch=1000)
    with pytest.raises(ValueError, match="min_overlap`=64 must be smaller than `n_patch`=48"):
        gx.tl.reconstruct(sc, geo, n_patch=48, min_overlap=64)
    with pytest.raises(ValueError, match="`smooth_k`=500 must be smaller than the number of cells"):
        gx.tl.reconstruct(sc, geo, n_patch=128, smooth_k=500)
    no_emb = sc.copy()
    del no_emb.obsm["X_gears"]
    with pytest.raises(KeyError, match="fit_adapter"):
        gx.tl.reconstruct(no_emb, geo)
    unadapted = sc.copy()
    del unadapted.uns["gears_adapter"]
    with pytest.raises(ValueError, match="allow_unadapted"):
        gx.tl.reconstruct(unadapted, geo)
    wrong = sc.copy()
    wrong.obsm["X_gears"] = wrong.obsm["X_gears"][:, :10]
    with pytest.raises(ValueError, match="128 embedding"):
        gx.tl.reconstruct(wrong, geo)
    with pytest.raises(TypeError, match="GEARS"):
        gx.tl.reconstruct(sc, trained_encoder[2])


def test_locality_graph_links_disconnected_clusters(rng):
    x = np.concatenate([rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 50])
    g, info = gx.geometry.locality_graph(x, k=10)
    assert info["n_components_before_linking"] >= 2
    assert info["n_components"] == 1
    assert (g != g.T).nnz == 0
    np.testing.assert_array_equal(g.diagonal(), 0)


def test_locality_graph_joins_components_that_are_each_others_nearest(rng):
    # two small clusters, far from the bulk, whose kNN edges only reach each other: linking each
    # component by its own shortest crossing edge would join them to each other and leave the pair
    # apart from the bulk (found on a 10k Xenium query: the cover then failed on a 42-cell patch)
    bulk = rng.normal(size=(300, 3))
    a = rng.normal(scale=0.1, size=(8, 3)) + [40, 0, 0]
    b = rng.normal(scale=0.1, size=(8, 3)) + [42, 0, 0]
    g, info = gx.geometry.locality_graph(np.concatenate([bulk, a, b]), k=10, jaccard=0.5)
    assert info["n_components_before_linking"] >= 3
    assert info["n_components"] == 1
    assert info["n_components_linked"] == info["n_components_before_linking"] - 1  # a spanning tree, no extra edge
    assert (g != g.T).nnz == 0


def test_neighbor_average_matches_brute_force(rng):
    from scipy.spatial.distance import cdist

    x = rng.normal(size=(300, 6))
    k = 7
    order = np.argsort(cdist(x, x), axis=1)[:, :k]  # each row's own index first (distance 0)
    np.testing.assert_allclose(gx.geometry.neighbor_average(x, k), x[order].mean(1), rtol=1e-5, atol=1e-6)
    # permuting the rows permutes the result
    perm = rng.permutation(300)
    np.testing.assert_allclose(gx.geometry.neighbor_average(x[perm], k), x[order].mean(1)[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gx.geometry.neighbor_average(x, 1), x.astype(np.float32))
    with pytest.raises(ValueError, match="more than k=300 rows"):
        gx.geometry.neighbor_average(x, 300)
    with pytest.raises(ValueError, match="k"):
        gx.geometry.neighbor_average(x, 0)


def test_reconstruct_reads_backed_files_and_dask_embeddings(trained_encoder, trained_gears, tmp_path):
    """Large queries may stay on disk (backed AnnData) or in a Dask array: same layout as in memory."""
    import anndata as ad

    da = pytest.importorskip("dask.array", reason="dask is the `dask` extra (installed by make test)")

    cells = trained_encoder[1][:1200].copy()
    _, geo = trained_gears
    want = gx.tl.reconstruct(cells, geo, anchor=None, progress=False, copy=True).obsm["X_gears_spatial"]
    lazy = cells.copy()
    lazy.obsm["X_gears"] = da.from_array(np.asarray(cells.obsm["X_gears"]), chunks=(250, -1))
    gx.tl.reconstruct(lazy, geo, anchor=None, progress=False)
    np.testing.assert_array_equal(lazy.obsm["X_gears_spatial"], want)
    cells.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    gx.tl.reconstruct(backed, geo, anchor=None, progress=False)
    np.testing.assert_array_equal(backed.obsm["X_gears_spatial"], want)
    backed.file.close()
