"""Calls that used to return a plausible but wrong result without a word (the bad-input catalogue's worst rows)."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import gearsx as gx

_TINY = {"n_out": 8, "dim": 32, "n_inducing": 8, "n_context_blocks": 1, "n_generator_blocks": 1, "n_refiner_blocks": 1}
_FAST = {"max_epochs": 1, "n_batches": 2, "batch_size": 2, "n_min": 40, "n_max": 60, "progress": False}


def _spots(n_per_slide=200, n_slides=3, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(n_per_slide * n_slides, 2))
    z = np.concatenate([np.sin(xy / 20), np.cos(xy / 30)], 1) + 0.05 * rng.normal(size=(len(xy), 4))
    adata = ad.AnnData(np.zeros((len(xy), 3), dtype=np.float32))
    adata.obsm["spatial"] = xy
    adata.obsm["X_gears"] = z.astype(np.float32)
    adata.obs["slide"] = pd.Categorical(np.repeat([f"s{i}" for i in range(n_slides)], n_per_slide))
    return adata


def test_gears_on_a_subset_copy_trains_on_the_subset():
    st = _spots()
    gx.model.GEARS.setup_anndata(st, slide_key="slide")
    st0 = st[st.obs["slide"] == "s0"].copy()
    geo = gx.model.GEARS(st0, **_TINY)
    geo.train(validation=None, **_FAST)
    assert geo.adata is st0
    assert geo.train_params_["n_train_spots"] == st0.n_obs == 200


def test_registration_writes_nothing_and_classes_do_not_interfere():
    st = _spots()
    st.layers["gears_centered"] = np.random.default_rng(0).normal(size=st.shape).astype(np.float32)
    obs_before, uns_before = list(st.obs.columns), set(st.uns)
    gx.model.SharedEncoder.setup_anndata(st, slide_key="slide")
    gx.model.GEARS.setup_anndata(st, slide_key=None)  # a different slide key for the other class
    assert list(st.obs.columns) == obs_before
    assert set(st.uns) == uns_before
    enc = gx.model.SharedEncoder(st, n_hidden=(8,), n_latent=4)
    assert enc._slide_names() == ["s0", "s1", "s2"]
    np.testing.assert_array_equal(enc._slide_codes(), np.repeat([0, 1, 2], 200))
    assert gx.model.GEARS(st, **_TINY)._slide_names() == ["0"]


def test_gears_without_keys_takes_the_recorded_slide_key(caplog):
    st = _spots()
    st.uns["gears_encoder"] = {"params": {"slide_key": "slide"}}
    with caplog.at_level(logging.INFO, logger="gearsx"):
        geo = gx.model.GEARS(st, **_TINY)
    assert geo.setup_args["slide_key"] == "slide"
    assert "recorded in uns['gears_encoder']" in caplog.text


def test_gears_with_other_keys_still_takes_the_recorded_slide_key(caplog):
    st = _spots()
    st.uns["gears_encoder"] = {"params": {"slide_key": "slide"}}
    geo = gx.model.GEARS(st, use_rep="X_gears", **_TINY)  # a key given, but not the slide's
    assert geo.setup_args["slide_key"] == "slide"
    assert geo._slide_names() == ["s0", "s1", "s2"]
    st.obs["donor"] = np.where(st.obs["slide"].astype(str) == "s2", "b", "a")  # slides s0 and s1 together
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.model.GEARS(st, slide_key="donor", **_TINY)
    assert "`slide_key='donor'` puts slides of `obs['slide']`" in caplog.text
    assert "1 value(s) of it" in caplog.text
    caplog.clear()
    st.obs["fov"] = st.obs["slide"].astype(str) + np.where(np.arange(st.n_obs) % 2, "-a", "-b")  # finer: fine
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.model.GEARS(st, slide_key="fov", **_TINY)
    assert "puts slides" not in caplog.text


def test_default_training_uses_every_slide():
    st = _spots()
    geo = gx.model.GEARS(st, slide_key="slide", **_TINY)
    geo.train(**_FAST)
    assert geo.train_params_["validation"].startswith("region")
    # a 20% band of each of the three slides is held out; 80% of every slide trains
    assert geo.train_params_["n_validation_spots"] == 3 * 40
    assert geo.train_params_["n_train_spots"] == 3 * 160
    geo.train(validation="slide", **_FAST)  # a whole slide is held out only when asked
    assert geo.train_params_["n_train_spots"] == 400


def _stacked_slides():
    """Two slides on one coordinate frame (same positions) whose representation says which slide a spot is in."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, size=(150, 2))
    adata = ad.AnnData(np.zeros((300, 2), dtype=np.float32))
    adata.obsm["spatial"] = np.vstack([xy, xy])
    adata.obs["slide"] = pd.Categorical(np.repeat(["a", "b"], 150))
    noise = 0.05 * rng.normal(size=(300, 4))
    adata.obsm["X_rep"] = np.repeat(np.array([[0.0, 0, 0, 0], [5.0, 5, 5, 5]]), 150, axis=0) + noise
    adata.uns["gears_encoder"] = {"params": {"slide_key": "slide"}}  # what fit_encoder records
    return adata


def test_refinement_never_pools_slides_without_slide_key():
    adata = _stacked_slides()
    gx.tl.cluster_domains(
        adata, method="kmeans", use_rep="X_rep", n_pcs=None, n_clusters=2, refine=True, n_spatial_neighbors=6
    )
    labels = adata.obs["gears_domain"].to_numpy()
    # each slide is one domain; pooling the slides' coincident spots would flip about half of them
    assert len(set(labels[:150])) == 1
    assert len(set(labels[150:])) == 1
    assert labels[0] != labels[-1]
    assert adata.uns["gears_domain"]["params"]["slide_key"] == "slide"
    del adata.uns["gears_encoder"]  # without any record the data are one slide, and pooling shows
    gx.tl.cluster_domains(
        adata, method="kmeans", use_rep="X_rep", n_pcs=None, n_clusters=2, refine=True, n_spatial_neighbors=6
    )
    pooled = adata.obs["gears_domain"].to_numpy()
    assert set(pooled[:150]) & set(pooled[150:])  # the two slides now share labels


def test_spatial_smooth_never_pools_slides_without_slide_key():
    adata = _stacked_slides()
    gx.tl.spatial_smooth(adata, use_rep="X_rep", n_neighbors=6)
    out = adata.obsm["X_rep_smoothed"]
    assert out[:150].max() < 1
    assert out[150:].min() > 4
    assert adata.uns["X_rep_smoothed"]["params"]["slide_key"] == "slide"


def test_save_overwrite_removes_a_stale_anndata(tmp_path):
    st = _spots()
    geo = gx.model.GEARS(st, slide_key="slide", **_TINY)
    geo.train(validation=None, **_FAST)
    geo.save(tmp_path / "m", save_anndata=True)
    other = _spots(seed=1)
    geo2 = gx.model.GEARS(other, slide_key="slide", **_TINY)
    geo2.train(validation=None, **_FAST)
    geo2.save(tmp_path / "m", overwrite=True)
    assert not (tmp_path / "m" / "adata.h5ad").exists()
    loaded = gx.model.GEARS.load(tmp_path / "m", accelerator="cpu")
    assert loaded.adata is None  # never the stale object of the first save


def test_loaded_gears_reconstructs_without_the_st_data(tmp_path):
    st = _spots(n_per_slide=300, n_slides=1)
    geo = gx.model.GEARS(st, slide_key="slide", **_TINY)
    geo.train(validation=None, **_FAST)
    geo.save(tmp_path / "geo")
    loaded = gx.model.GEARS.load(tmp_path / "geo", accelerator="cpu")
    assert loaded.adata is None
    assert loaded.is_trained
    assert loaded.n_input == 4
    assert "without data" in repr(loaded)
    query = ad.AnnData(np.zeros((120, 1), dtype=np.float32))
    query.obsm["X_gears"] = st.obsm["X_gears"][:120]
    expected = geo.predict_geometry(query.obsm["X_gears"], indices=np.arange(60), random_state=2)
    np.testing.assert_allclose(
        loaded.predict_geometry(query, indices=np.arange(60), random_state=2), expected, atol=1e-5
    )
    gx.tl.reconstruct(query, loaded, n_patch=60, min_overlap=10, smooth_k=5, allow_unadapted=True, progress=False)
    assert np.isfinite(query.obsm["X_gears_spatial"]).all()
    loaded.save(tmp_path / "again")  # round trip of a data-free model
    assert gx.model.GEARS.load(tmp_path / "again", accelerator="cpu").n_input == 4
    with pytest.raises(ValueError, match="without its ST data"):
        loaded.train()


def test_evaluate_geometry_warns_on_a_collapsed_layout():
    truth = np.random.default_rng(0).uniform(size=(50, 2))
    with pytest.warns(RuntimeWarning, match="collapsed"):
        scores = gx.metrics.evaluate_geometry(np.zeros((50, 2)), truth)
    assert np.isnan(scores["spearman"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gx.metrics.evaluate_geometry(truth + 0.01, truth)  # a real layout gives no warning


def _st_and_cells(seed=0):
    """Tiny simulated ST and SC data, preprocessed and mean-centred (no encoder yet)."""
    raw_st, raw_sc = gx.datasets.simulate_tissue(n_slides=2, n_cells_per_slide=4000, n_genes=40, random_state=seed)
    st, sc = gx.pp.prepare(raw_st, raw_sc, slide_key="slide", n_top_genes=30)
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    gx.pp.mean_center_per_slide(sc, slide_key=None)
    return st, sc


_ENC = {"max_epochs": 2, "n_latent": 4, "n_hidden": (16,), "progress": False}


def test_encoder_fingerprint_survives_saving_and_changes_with_a_refit(tmp_path):
    st, _ = _st_and_cells()
    enc = gx.tl.fit_encoder(st, slide_key="slide", random_state=0, **_ENC)
    assert st.uns["gears_encoder"]["encoder_id"] == enc.fingerprint
    enc.save(tmp_path / "enc")
    assert gx.model.SharedEncoder.load(tmp_path / "enc", st).fingerprint == enc.fingerprint
    same = gx.tl.fit_encoder(st.copy(), slide_key="slide", random_state=0, **_ENC)
    assert same.fingerprint == enc.fingerprint  # deterministic on the CPU
    other = gx.tl.fit_encoder(st.copy(), slide_key="slide", random_state=1, **_ENC)
    assert other.fingerprint != enc.fingerprint


def test_reconstruct_refuses_cells_of_another_encoder(tmp_path):
    """A refitted encoder embeds into another space of the same width: once silently accepted."""
    st, sc = _st_and_cells()
    enc_a = gx.tl.fit_encoder(st, slide_key="slide", random_state=0, **_ENC)
    gx.tl.fit_adapter(sc, enc_a, max_epochs=1, progress=False)
    geo = gx.model.GEARS(st, slide_key="slide", **_TINY)
    geo.train(**_FAST)
    assert geo.train_params_["encoder_id"] == enc_a.fingerprint
    kw = {"n_patch": 64, "min_overlap": 8, "progress": False}
    gx.tl.reconstruct(sc.copy(), geo, **kw)  # the same encoder: fine

    enc_b = gx.tl.fit_encoder(st, slide_key="slide", random_state=1, **_ENC)  # st's embeddings replaced
    with pytest.raises(ValueError, match="embedded again"):
        gx.tl.reconstruct(sc.copy(), geo, **kw)  # the anchors would read enc_b's spots
    gx.tl.reconstruct(sc.copy(), geo, anchor=None, **kw)  # intrinsic: only the model's weights, trained on enc_a

    other = sc.copy()
    gx.tl.fit_adapter(other, enc_b, max_epochs=1, progress=False)
    before = other.copy()
    geo.save(tmp_path / "geo")
    loaded = gx.model.GEARS.load(tmp_path / "geo")  # the fingerprint is saved with the model
    for model in (geo, loaded):
        with pytest.raises(ValueError, match=f"encoder {enc_b.fingerprint}.*encoder {enc_a.fingerprint}"):
            gx.tl.reconstruct(other, model, anchor=None, **kw)
    assert set(other.obsm) == set(before.obsm)  # nothing written
    assert "gears" not in other.uns


def test_data_read_as_one_slide_warn_when_a_slide_column_holds_several(caplog):
    """Spots of concatenated slides became each other's neighbours without a word when no slide key was known."""
    adata = _spots(n_per_slide=60, n_slides=2)
    adata.obs["library_id"] = adata.obs.pop("slide")  # squidpy's name; nothing recorded in uns
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.spatial_smooth(adata, use_rep="X_gears", n_neighbors=4)
    assert "`adata.obs['library_id']` holds 2 values" in caplog.text
    assert "slide_key='library_id'" in caplog.text

    for kwargs, edit in (
        ({"slide_key": "library_id"}, None),  # the slides named
        ({}, lambda a: a.uns.__setitem__("gears_prepare", {"params": {"slide_key": ""}})),  # "one slide" recorded
        ({}, lambda a: a.obs.__setitem__("library_id", "s0")),  # one value: one slide
    ):
        other = adata.copy()
        if edit is not None:
            edit(other)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gearsx"):
            gx.tl.spatial_smooth(other, use_rep="X_gears", n_neighbors=4, **kwargs)
        assert "read as one slide" not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gearsx"):  # a count of slides only: no neighbours, no warning
        gx.tl.cluster_domains(adata, use_rep="X_gears", method="kmeans", n_clusters=3)
    assert "read as one slide" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="gearsx"):
        gx.tl.cluster_domains(adata, use_rep="X_gears", method="kmeans", n_clusters=3, refine=True)
    assert caplog.text.count("read as one slide") == 1


def test_encoder_record_survives_a_file_round_trip_whatever_the_slide_names(tmp_path):
    # The per-slide neighbour overlap was a dict keyed by slide name: a name holding '/' ("sample/1")
    # came back from h5ad as nested dicts, and write_zarr failed after training.
    import anndata as ad

    st = _spots(n_per_slide=120)
    st.obs["slide"] = st.obs["slide"].cat.rename_categories(lambda s: f"sample/{s}")
    st.layers["gears_centered"] = np.random.default_rng(1).normal(size=st.shape).astype(np.float32)
    gx.tl.fit_encoder(st, slide_key="slide", max_epochs=1, n_latent=4, n_hidden=(8,), progress=False)
    record = st.uns["gears_encoder"]
    assert list(record["slides"]) == ["sample/s0", "sample/s1", "sample/s2"]
    st.write_h5ad(tmp_path / "st.h5ad")
    st.write_zarr(tmp_path / "st.zarr")
    for back in (ad.read_h5ad(tmp_path / "st.h5ad"), ad.read_zarr(tmp_path / "st.zarr")):
        again = back.uns["gears_encoder"]
        assert sorted(again) == sorted(record)
        assert list(again["slides"]) == list(record["slides"])
        np.testing.assert_array_equal(again["knn_overlap20_per_slide"], record["knn_overlap20_per_slide"])


def test_fit_encoder_without_a_slide_key_takes_the_recorded_slide_column(caplog):
    # It read a multi-slide reference as one slide: spots of different slides, sharing one coordinate
    # frame, became each other's spatial positives, and the record said "one slide".
    st = _spots(n_per_slide=120)
    st.layers["gears_centered"] = np.random.default_rng(1).normal(size=st.shape).astype(np.float32)
    st.uns["gears_centered"] = {"params": {"slide_key": "slide"}}
    with caplog.at_level(logging.INFO, logger="gearsx"):
        gx.tl.fit_encoder(st, slide_key=None, max_epochs=1, n_latent=4, n_hidden=(8,), progress=False)
    assert "recorded in uns['gears_centered']" in caplog.text
    assert st.uns["gears_encoder"]["params"]["slide_key"] == "slide"
    assert list(st.uns["gears_encoder"]["slides"]) == ["s0", "s1", "s2"]
    assert len(st.uns["gears_encoder"]["knn_overlap20_per_slide"]) == 3
    other = _spots(n_per_slide=50)
    other.layers["gears_centered"] = other.X.copy()
    other.uns["gears_prepare"] = {"params": {"slide_key": "slide"}}
    gx.model.SharedEncoder.setup_anndata(other)
    assert gx.model.SharedEncoder(other, n_hidden=(8,), n_latent=4)._slide_names() == ["s0", "s1", "s2"]


def test_spot_lattice_results_do_not_depend_on_the_coordinates_units_or_origin():
    """The simulator's spots lie on a hexagonal lattice, where equidistant spots used to be ranked by rounding."""
    st, _ = _st_and_cells()
    other = st.copy()
    other.obsm["spatial"] = st.obsm["spatial"] * 0.01 + 250.0  # another unit and another origin
    for a in (st, other):
        gx.tl.fit_encoder(a, slide_key="slide", random_state=0, **_ENC)  # spatial positives: kNN of the spots
        gx.tl.cluster_domains(a, method="kmeans", n_clusters=3, refine=True, random_state=0)
    np.testing.assert_array_equal(other.obsm["X_gears"], st.obsm["X_gears"])
    np.testing.assert_array_equal(other.obs["gears_domain"].to_numpy(), st.obs["gears_domain"].to_numpy())
