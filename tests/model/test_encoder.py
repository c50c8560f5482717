from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import gearsx as gx
from tests.model.make_saved_model import tiny_adata

FIXTURE = Path(__file__).parent / "saved_model" / "v1"


@pytest.fixture(scope="module")
def trained(trained_encoder):
    return trained_encoder


def test_encoder_and_adapter_meet_targets_on_simulator(trained):
    st, sc, model = trained
    enc = st.uns["gears_encoder"]
    ada = sc.uns["gears_adapter"]
    # plain PCA of the centred expression as the baseline for spatial locality
    from sklearn.decomposition import PCA

    slides = st.obs["slide"].to_numpy()
    pca = PCA(50, random_state=0).fit_transform(st.layers["gears_centered"])
    base = gx.metrics.knn_overlap(pca, st.obsm["spatial"], k=20, groups=slides)
    print(
        f"encoder: overlap@20 {enc['knn_overlap20']:.3f} (PCA {base:.3f}), slide probe "
        f"{enc['slide_probe']['balanced_accuracy']:.3f} (chance {enc['slide_probe']['chance']:.3f}), norm ratio "
        f"{enc['norm_ratio']:.3f}; adapter domain accuracy {ada['before']['domain_accuracy']:.3f} -> "
        f"{ada['after']['domain_accuracy']:.3f}, iLISI {ada['before']['ilisi']:.2f} -> {ada['after']['ilisi']:.2f}"
    )
    assert enc["knn_overlap20"] >= 0.5
    assert enc["knn_overlap20"] > base
    assert abs(enc["slide_probe"]["balanced_accuracy"] - enc["slide_probe"]["chance"]) <= 0.15
    assert enc["norm_ratio"] < 1.2
    assert ada["before"]["domain_accuracy"] > 0.9
    assert ada["after"]["domain_accuracy"] <= 0.65
    assert ada["after"]["mmd"] < ada["before"]["mmd"]
    assert ada["after"]["ilisi"] > ada["before"]["ilisi"]
    assert st.obsm["X_gears"].shape == (st.n_obs, 128)
    assert sc.obsm["X_gears"].shape == (sc.n_obs, 128)
    # the ST embeddings are untouched by the adapter; the SC ones are the adapted encoder output
    np.testing.assert_allclose(model.get_latent_representation(), st.obsm["X_gears"], atol=1e-5)
    np.testing.assert_allclose(model.get_latent_representation(sc, adapt=True), sc.obsm["X_gears"], atol=1e-4)
    assert len(model.history_) == model.train_params_["max_epochs"]
    assert "trained" in repr(model)


def test_backbone_is_the_layer_the_embedding_projects_from(trained):
    """obsm['X_gears'] is exactly the final linear layer applied to obsm['X_gears_backbone']."""
    st, sc, model = trained
    h = st.obsm["X_gears_backbone"]
    assert h.shape == (st.n_obs, 256)
    assert st.uns["gears_encoder"]["params"]["backbone_key"] == "X_gears_backbone"
    last = model.module.encoder.net[-1]
    z = h @ last.weight.detach().cpu().numpy().T + last.bias.detach().cpu().numpy()
    np.testing.assert_allclose(z, st.obsm["X_gears"], atol=1e-4)
    # the backbone follows a LayerNorm and a GELU, so it is not an affine map of the expression
    assert h.min() >= -0.2
    np.testing.assert_allclose(model.get_latent_representation(representation="backbone"), h, atol=1e-6)
    assert model.get_latent_representation(sc, representation="backbone").shape == (sc.n_obs, 256)
    with pytest.raises(ValueError, match="adapter is not defined on the backbone"):
        model.get_latent_representation(sc, adapt=True, representation="backbone")
    with pytest.raises(ValueError, match="`representation`"):
        model.get_latent_representation(representation="hidden")


def test_default_domain_representation_is_the_backbone(trained):
    """mclust with the default ``use_rep`` clusters the backbone and recovers the simulator's domains."""
    st = trained[0]
    a = st[st.obs["slide"] == st.obs["slide"].iloc[0]].copy()
    k = a.obs["domain"].nunique()
    scores = {}
    for rep, kwargs in (("X_gears_backbone", {}), ("X_gears", {"use_rep": "X_gears"})):
        gx.tl.cluster_domains(a, n_clusters=k, **kwargs)
        assert a.uns["gears_domain"]["params"]["use_rep"] == rep
        scores[rep] = gx.metrics.domain_scores(a.obs["domain"], a.obs["gears_domain"])["ari"]
    print(
        f"simulator domains, mclust ARI: backbone {scores['X_gears_backbone']:.3f}, embedding {scores['X_gears']:.3f}"
    )
    assert scores["X_gears_backbone"] > 0.5


def test_uns_is_h5ad_writable(trained, tmp_path):
    st, sc, _ = trained
    st.write_h5ad(tmp_path / "st.h5ad")
    sc.write_h5ad(tmp_path / "sc.h5ad")
    back = ad.read_h5ad(tmp_path / "sc.h5ad")
    assert back.uns["gears_adapter"]["after"]["domain_accuracy"] == sc.uns["gears_adapter"]["after"]["domain_accuracy"]


def test_save_load_roundtrip_with_adapter(trained, tmp_path, device_atol):
    st, sc, model = trained
    model.save(tmp_path / "m")
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert any(k.startswith("adapter.") for k in state)
    loaded = gx.model.SharedEncoder.load(tmp_path / "m", st.copy(), accelerator="cpu")
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=device_atol)
    np.testing.assert_allclose(loaded.get_latent_representation(sc, adapt=True), sc.obsm["X_gears"], atol=1e-4)
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(tmp_path / "m")


def _tiny(slide_key="slide"):
    adata = tiny_adata()
    gx.model.SharedEncoder.setup_anndata(adata, slide_key=slide_key)
    return adata


def test_same_seed_same_embedding():
    a, b = _tiny(), _tiny()
    za = gx.model.SharedEncoder(a, n_hidden=(8,), n_latent=4)
    zb = gx.model.SharedEncoder(b, n_hidden=(8,), n_latent=4)
    for m in (za, zb):
        m.train(max_epochs=3, batch_size=16, n_spatial_neighbors=3, random_state=5, progress=False)
    np.testing.assert_array_equal(za.get_latent_representation(), zb.get_latent_representation())
    zc = gx.model.SharedEncoder(_tiny(), n_hidden=(8,), n_latent=4)
    zc.train(max_epochs=3, batch_size=16, n_spatial_neighbors=3, random_state=6, progress=False)
    assert not np.allclose(za.get_latent_representation(), zc.get_latent_representation())


def test_committed_fixture_loads_with_same_latent():
    adata = tiny_adata()
    model = gx.model.SharedEncoder.load(FIXTURE, adata, accelerator="cpu")
    np.testing.assert_allclose(model.get_latent_representation(), np.load(FIXTURE / "expected_latent.npy"), atol=1e-5)
    assert model.is_trained_


def test_load_with_other_genes_raises():
    adata = tiny_adata()
    with pytest.raises(
        ValueError, match=r"genes of `adata`.*the model's genes in another order.*adata\[:, model.var_names\]"
    ):
        gx.model.SharedEncoder.load(FIXTURE, adata[:, ::-1].copy())
    n_missing = adata.n_vars - 5
    with pytest.raises(
        ValueError, match=rf"genes of `adata`.*{n_missing} of the model's genes are missing from it \('"
    ):
        gx.model.SharedEncoder.load(FIXTURE, adata[:, :5].copy())


def test_single_slide_is_valid():
    adata = _tiny(slide_key=None)
    model = gx.model.SharedEncoder(adata, n_hidden=(8,), n_latent=4)
    model.train(max_epochs=2, batch_size=16, n_spatial_neighbors=3, progress=False)
    assert model.get_latent_representation().shape == (60, 4)


def test_untrained_model_raises():
    model = gx.model.SharedEncoder(_tiny(), n_hidden=(8,), n_latent=4)
    with pytest.raises(RuntimeError, match="not trained"):
        model.get_latent_representation()


def test_bad_input():
    adata = tiny_adata()
    with pytest.raises(KeyError, match="slide_key"):
        gx.model.SharedEncoder.setup_anndata(adata, slide_key="sample")
    with pytest.raises(KeyError, match="layer"):
        gx.model.SharedEncoder.setup_anndata(adata, layer="missing", slide_key="slide")
    nan = adata.copy()
    nan.layers["gears_centered"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gx.model.SharedEncoder.setup_anndata(nan, slide_key="slide")
    nospatial = adata.copy()
    del nospatial.obsm["spatial"]
    with pytest.raises(KeyError, match="spatial"):
        gx.model.SharedEncoder.setup_anndata(nospatial, slide_key="slide")
    with pytest.raises(ValueError, match="not set up"):
        gx.model.SharedEncoder(tiny_adata())
    model = gx.model.SharedEncoder(_tiny(), n_hidden=(8,), n_latent=4)
    with pytest.raises(ValueError, match="n_spatial_neighbors"):
        model.train(max_epochs=1, n_spatial_neighbors=40, progress=False)


def test_adapter_bad_input():
    adata = _tiny()
    model = gx.model.SharedEncoder(adata, n_hidden=(8,), n_latent=4)
    model.train(max_epochs=1, batch_size=16, n_spatial_neighbors=3, progress=False)
    other_genes = tiny_adata()[:, :6].copy()
    with pytest.raises(ValueError, match="genes of `adata`"):
        gx.tl.fit_adapter(other_genes, model)
    no_layer = tiny_adata()
    del no_layer.layers["gears_centered"]
    with pytest.raises(KeyError, match="mean_center_per_slide"):
        gx.tl.fit_adapter(no_layer, model)
    with pytest.raises(NotImplementedError, match="linear"):
        gx.tl.fit_adapter(tiny_adata(), model, mode="mlp")


def test_adapter_fits_the_smallest_query_it_accepts():
    """Ten cells (the documented minimum): the alignment report's kNN mixing once asked for 30 neighbours
    among 20 points and failed after training."""
    adata = _tiny()
    model = gx.model.SharedEncoder(adata, n_hidden=(8,), n_latent=4)
    model.train(max_epochs=1, batch_size=16, n_spatial_neighbors=3, progress=False)
    sc = tiny_adata()[:10].copy()
    gx.tl.fit_adapter(sc, model, max_epochs=1, progress=False)
    assert sc.obsm["X_gears"].shape == (10, 4)
    for when in ("before", "after"):
        assert 1.0 <= sc.uns["gears_adapter"][when]["ilisi"] <= 2.0


def test_adapter_max_steps_caps_epochs_and_is_inert_when_large():
    adata = _tiny()
    model = gx.model.SharedEncoder(adata, n_hidden=(8,), n_latent=4)
    model.train(max_epochs=1, batch_size=16, n_spatial_neighbors=3, progress=False)
    sc = tiny_adata()
    per_epoch = -(-sc.n_obs // 16)
    gx.tl.fit_adapter(sc, model, max_epochs=10, batch_size=16, max_steps=2 * per_epoch, progress=False)
    assert sc.uns["gears_adapter"]["params"]["epochs_run"] == 2
    gx.tl.fit_adapter(sc, model, max_epochs=10, batch_size=16, max_steps=10 * per_epoch, progress=False)
    capped = sc.obsm["X_gears"].copy()
    gx.tl.fit_adapter(sc, model, max_epochs=10, batch_size=16, max_steps=None, progress=False)
    assert sc.uns["gears_adapter"]["params"]["epochs_run"] == 10
    assert "max_steps" not in sc.uns["gears_adapter"]["params"]
    np.testing.assert_array_equal(capped, sc.obsm["X_gears"])  # a cap that is not reached changes nothing
    with pytest.raises(ValueError, match="max_steps"):
        gx.tl.fit_adapter(sc, model, max_steps=0)


def test_sc_adapter_class_fits_attaches_and_round_trips(tmp_path):
    """gx.model.SCAdapter: the closed-form start whitens/colours exactly, fitting attaches it to its encoder,
    transform equals the encoder's adapted output, and save/load restores the same map."""
    adata = _tiny()
    model = gx.model.SharedEncoder(adata, n_hidden=(8,), n_latent=4)
    model.train(max_epochs=1, batch_size=16, n_spatial_neighbors=3, progress=False)
    sc = tiny_adata()
    sc.layers["gears_centered"] = sc.layers["gears_centered"] * 3.0 + 1.0  # a batch shift the map must undo
    adapter = gx.model.SCAdapter(model)
    assert not adapter.is_fitted
    assert model.adapter is None
    assert "not fitted" in repr(adapter)
    with pytest.raises(RuntimeError, match="not fitted"):
        adapter.transform(np.zeros((2, 4)))
    adapter.fit(sc, max_epochs=0, progress=False)  # closed form only: W0 C_SC W0^T = C_ST (shrunk covariances)
    assert model.adapter is adapter
    assert adapter.params_["epochs_run"] == 0
    z_sc, z_st = model.get_latent_representation(sc), model.get_latent_representation()
    mapped = adapter.transform(z_sc)
    np.testing.assert_allclose(mapped.mean(0), z_st.mean(0), atol=1e-4)
    np.testing.assert_allclose(mapped, model.get_latent_representation(sc, adapt=True), atol=1e-5)
    adapter.fit(sc, max_epochs=3, batch_size=16, progress=False)
    assert len(adapter.history_) == 3
    adapter.fit(sc, max_epochs=0, progress=False)
    assert adapter.history_ is None  # the closed-form refit keeps no stale loss curve
    adapter.fit(sc, max_epochs=3, batch_size=16, progress=False)
    assert set(adapter.report_) == {"before", "after"}
    assert adapter.report_["after"]["centroid_distance"] < adapter.report_["before"]["centroid_distance"]
    with pytest.raises(ValueError, match=r"\(n_obs, 4\)"):
        adapter.transform(np.zeros((2, 3)))
    adapter.save(tmp_path / "a")
    with pytest.raises(FileExistsError, match="overwrite"):
        adapter.save(tmp_path / "a")
    other = gx.model.SharedEncoder(_tiny(), n_hidden=(8,), n_latent=4)
    other.train(max_epochs=1, batch_size=16, n_spatial_neighbors=3, progress=False)
    back = gx.model.SCAdapter.load(tmp_path / "a", other)
    assert other.adapter is back
    assert back.params_ == adapter.params_
    np.testing.assert_allclose(back.transform(z_sc), adapter.transform(z_sc), atol=0)
    with pytest.raises(ValueError, match="fitted on this encoder"):
        model.adapter = back
    wide = gx.model.SharedEncoder(_tiny(), n_hidden=(8,), n_latent=6)
    wide.train(max_epochs=1, batch_size=16, n_spatial_neighbors=3, progress=False)
    with pytest.raises(ValueError, match="6-dimensional"):
        gx.model.SCAdapter.load(tmp_path / "a", wide)
    with pytest.raises(TypeError, match="SharedEncoder"):
        gx.model.SCAdapter(adata)


def test_get_representations_is_one_pass_of_both(trained):
    st, sc, model = trained
    reps = model.get_representations(sc, ("embedding", "backbone"), adapt=False)
    np.testing.assert_allclose(reps["embedding"], model.get_latent_representation(sc), atol=1e-6)
    np.testing.assert_allclose(
        reps["backbone"], model.get_latent_representation(sc, representation="backbone"), atol=1e-6
    )
    with pytest.raises(ValueError, match="'embedding' and 'backbone' only"):
        model.get_representations(sc, ("hidden",))


def test_embeddings_stream_from_backed_sparse_and_dask_input(trained, tmp_path):
    """Inference reads one block at a time: backed files, sparse and dask matrices give the in-memory result."""
    da = pytest.importorskip("dask.array", reason="dask is the `dask` extra (installed by make test)")
    import scipy.sparse as sp

    st, sc, model = trained
    cells = sc[:700].copy()
    want = model.get_latent_representation(cells, layer="gears_centered")
    cells.X = cells.layers["gears_centered"].copy()
    cells.layers["sparse"] = sp.csr_matrix(cells.X)
    cells.layers["dask"] = da.from_array(np.asarray(cells.X), chunks=(97, -1))
    for layer in (None, "sparse", "dask"):
        got = model.get_latent_representation(cells, layer=layer, batch_size=128)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=str(layer))
    pick = np.random.default_rng(0).permutation(700)[:300]
    pick[5] = pick[6]  # a repeated row
    np.testing.assert_allclose(
        model.get_latent_representation(cells, indices=pick, batch_size=64), want[pick], atol=1e-5
    )
    del cells.layers["dask"]
    cells.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    np.testing.assert_allclose(model.get_latent_representation(backed, layer=None, batch_size=128), want, atol=1e-5)
    np.testing.assert_allclose(
        model.get_latent_representation(backed, layer=None, indices=pick, batch_size=64), want[pick], atol=1e-5
    )
    backed.file.close()
    cells.X = sp.csr_matrix(cells.X)
    cells.write_h5ad(tmp_path / "sparse.h5ad")
    backed = ad.read_h5ad(tmp_path / "sparse.h5ad", backed="r")
    np.testing.assert_allclose(model.get_latent_representation(backed, layer=None, batch_size=128), want, atol=1e-5)
    backed.file.close()
    bad = cells.copy()
    bad.X = bad.X.toarray()
    bad.X[3, 2] = np.nan
    with pytest.raises(ValueError, match="holds NaN or inf"):
        model.get_latent_representation(bad, layer=None)


def test_default_schedule_caps_the_passes_over_a_small_reference():
    """About 1,500 steps, but at most 250 epochs (small references) and at least 20 (large ones)."""
    from gearsx.model._encoder import default_epochs

    assert default_epochs(212, 256) == 250  # one batch per epoch: 250 steps, not 1,500 passes
    assert default_epochs(901, 256) == 250  # three batches: 750 steps (400 epochs before the cap)
    assert default_epochs(2560, 256) == 150  # ten batches: the 1,500 steps
    assert default_epochs(1_000_000, 256) == 20
    assert default_epochs(3000, 64) == 33  # 46 batches of 64: 1,500 / 46 = 32.6
