import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import gearsx as gx


def _synthetic(n_per_slide=300, n_slides=2, seed=0):
    """Spots whose embeddings are a smooth (noisy) function of position: geometry is learnable."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(n_per_slide * n_slides, 2))
    freq = rng.normal(size=(2, 8)) / 25
    z = np.concatenate([np.sin(xy @ freq), np.cos(xy @ freq)], 1) + 0.05 * rng.normal(size=(len(xy), 16))
    adata = ad.AnnData(np.zeros((len(xy), 3), dtype=np.float32))
    adata.obsm["spatial"] = xy
    adata.obsm["X_gears"] = z.astype(np.float32)
    adata.obs["slide"] = pd.Categorical(np.repeat([f"s{i}" for i in range(n_slides)], n_per_slide))
    return adata


_TINY = {"n_out": 8, "dim": 32, "n_inducing": 8, "n_context_blocks": 1, "n_generator_blocks": 1, "n_refiner_blocks": 1}
_FAST = {"max_epochs": 2, "n_batches": 3, "batch_size": 2, "n_min": 40, "n_max": 60, "progress": False}


def _scores(pred, xy):
    return gx.metrics.knn_overlap(pred, xy, k=15), gx.metrics.distance_correlation(pred, xy)


def test_gears_beats_pca_on_held_out_slide(trained_gears):
    """Train briefly on two simulator slides; predict minisets of the third (held out) slide."""
    from sklearn.decomposition import PCA

    st, geo = trained_gears
    held_name = st.obs["slide"].cat.categories[-1]
    assert geo.train_params_["validation"] == f"slide {held_name}"
    assert geo.train_params_["n_validation_spots"] == int((st.obs["slide"] == held_name).sum())
    assert {"val_L_geo", "val_recall15", "val_spearman", "val_base_spearman", "train_denoise"} <= set(geo.history_)
    assert len(geo.history_) == 4
    assert geo.structure is None  # the default: the generator alone
    assert not hasattr(geo.module, "ref_blocks")
    assert float(geo.module.sigma_data) == 0

    held = np.flatnonzero(st.obs["slide"].to_numpy() == held_name)
    sampler = gx.geometry.MinisetSampler(st.obsm["spatial"][held], n_min=128, n_max=384)
    rng = np.random.default_rng(1)
    sets = [held[sampler.sample(rng)] for _ in range(12)]
    refined, base = geo.predict_geometry(indices=sets, return_base=True)
    emb = st.obsm["X_gears"]
    res = {"gears": [], "generator": [], "pca": []}
    for s, r, b in zip(sets, refined, base, strict=True):
        xy = st.obsm["spatial"][s]
        res["gears"].append(_scores(r, xy))
        res["generator"].append(_scores(b, xy))
        res["pca"].append(_scores(PCA(2, random_state=0).fit_transform(emb[s]), xy))
    for r, b in zip(refined, base, strict=True):  # no refiner: the prediction is the generator's
        np.testing.assert_array_equal(r, b)
    means = {k: np.mean(v, axis=0) for k, v in res.items()}
    print("held-out slide minisets (recall@15, Spearman):", {k: np.round(v, 3).tolist() for k, v in means.items()})
    assert means["gears"][0] > means["pca"][0] + 0.15
    assert means["gears"][1] > means["pca"][1] + 0.3
    assert means["gears"][1] > 0.85


def test_same_seed_same_weights_save_load(tmp_path):
    adata = _synthetic()
    torch.manual_seed(123)  # different global RNG states at construction must not matter
    a = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    a.train(random_state=3, **_FAST)
    torch.manual_seed(999)
    b = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    b.train(random_state=3, **_FAST)
    for (name, p), q in zip(a.module.state_dict().items(), b.module.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    sets = [np.arange(50), np.arange(100, 170)]
    pa = a.predict_geometry(indices=sets, random_state=1)
    np.testing.assert_array_equal(pa[1], b.predict_geometry(indices=sets, random_state=1)[1])
    c = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    c.train(random_state=4, **_FAST)
    assert not np.allclose(pa[0], c.predict_geometry(indices=sets, random_state=1)[0])
    d = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    d.train(random_state=3, loss_weights={"gen_gram": 3.0}, **_FAST)
    assert d.train_params_["loss_weights"] == {"gen_gram": 3.0}
    assert a.train_params_["loss_weights"] == {}
    assert not np.allclose(pa[0], d.predict_geometry(indices=sets, random_state=1)[0])  # the weight is used

    a.save(tmp_path / "geo")
    loaded = gx.model.GEARS.load(tmp_path / "geo", adata, accelerator="cpu")
    assert loaded.train_params_ == a.train_params_
    assert float(loaded.module.sigma_data) == float(a.module.sigma_data)
    for x, y in zip(pa, loaded.predict_geometry(indices=sets, random_state=1), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    assert "trained" in repr(loaded)


def test_refiner_trains_when_asked_and_old_saves_load_with_it(tmp_path):
    """``structure='refiner'`` trains the refiner after the warm-up; a model saved without a recorded
    ``structure`` (before the generator-only default) loads with its refiner and predicts the same."""
    import json

    adata = _synthetic()
    geo = gx.model.GEARS(adata, slide_key="slide", structure="refiner", **_TINY)
    geo.train(random_state=0, **_FAST)
    assert geo.structure == "refiner"
    assert float(geo.module.sigma_data) > 0
    assert geo.history_["train_denoise"].iloc[-1] > 0
    sets = [np.arange(50), np.arange(100, 170)]
    refined, base = geo.predict_geometry(indices=sets, random_state=1, return_base=True)
    assert not np.allclose(refined[0], base[0], atol=1e-3)  # the refinement moves the proposal
    np.testing.assert_allclose(geo.predict_geometry(indices=sets, refine_steps=0)[0], base[0], atol=1e-9)
    # the default, the generator alone, builds no refiner layers
    plain = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    assert sum(p.numel() for p in plain.module.parameters()) < sum(p.numel() for p in geo.module.parameters())
    geo.save(tmp_path / "geo")
    meta_file = tmp_path / "geo" / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["init_params"]["structure"] == "refiner"
    del meta["init_params"]["structure"]
    meta_file.write_text(json.dumps(meta))
    loaded = gx.model.GEARS.load(tmp_path / "geo", accelerator="cpu")
    assert loaded.structure == "refiner"
    for x, y in zip(refined, loaded.predict_geometry(adata.obsm["X_gears"], indices=sets, random_state=1), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_predict_geometry_inputs():
    adata = _synthetic()
    geo = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    with pytest.raises(RuntimeError, match="not trained"):
        geo.predict_geometry(indices=np.arange(10))
    geo.train(validation=None, **_FAST)
    assert geo.train_params_["validation"] == "none"
    one = geo.predict_geometry(indices=np.arange(40))
    assert one.shape == (40, 2)
    np.testing.assert_allclose(one.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(np.sqrt((one**2).sum(1).mean()), 1.0, atol=1e-6)
    # same set through an AnnData, an embedding array, and inside a padded batch with a larger set
    sub = adata[:40].copy()
    np.testing.assert_allclose(geo.predict_geometry(sub), one, atol=1e-5)
    np.testing.assert_allclose(geo.predict_geometry(adata.obsm["X_gears"][:40]), one, atol=1e-5)
    batched = geo.predict_geometry(indices=[np.arange(40), np.arange(100, 190)], batch_size=2)
    np.testing.assert_allclose(batched[0], one, atol=1e-5)
    # without a refiner, refine_steps changes nothing: the prediction is the generator's
    base = geo.predict_geometry(indices=np.arange(40), refine_steps=0)
    np.testing.assert_array_equal(base, one)
    np.testing.assert_allclose(base, geo.predict_geometry(indices=np.arange(40), return_base=True)[1], atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        geo.predict_geometry(np.zeros((10, 5), dtype=np.float32))
    with pytest.raises(IndexError, match="outside"):
        geo.predict_geometry(indices=[np.arange(10), np.array([0, 1, 10_000])])
    sc = adata.copy()
    del sc.obsm["X_gears"]
    with pytest.raises(KeyError, match="fit_adapter"):
        geo.predict_geometry(sc)


def test_validation_region_on_single_slide():
    adata = _synthetic(n_per_slide=500, n_slides=1)
    geo = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    geo.train(**_FAST)
    assert geo.train_params_["validation"].startswith("region")
    assert geo.train_params_["n_validation_spots"] == 100
    assert np.isfinite(geo.history_["val_spearman"]).all()


def test_bad_input():
    adata = _synthetic()
    no_emb = adata.copy()
    del no_emb.obsm["X_gears"]
    with pytest.raises(KeyError, match="fit_encoder"):
        gx.model.GEARS(no_emb)
    with pytest.raises(KeyError, match="slide_key"):
        gx.model.GEARS(adata, slide_key="nope")
    bad = adata.copy()
    bad.obsm["X_gears"][0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        gx.model.GEARS(bad)
    with pytest.raises(ValueError, match="targets"):
        gx.model.GEARS(adata, targets="oracle")
    geo = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    with pytest.raises(ValueError, match="n_min=400"):
        geo.train(n_min=400, n_max=400, progress=False)
    single = _synthetic(n_slides=1)
    with pytest.raises(ValueError, match="single slide"):
        gx.model.GEARS(single, slide_key="slide", **_TINY).train(validation="slide", **_FAST)
    with pytest.raises(ValueError, match="validation_slide"):
        geo.train(validation_slide="s9", **_FAST)


def test_rw_stress_targets_train():
    adata = _synthetic()
    geo = gx.model.GEARS(adata, slide_key="slide", targets="rw_stress", **_TINY)
    geo.train(**_FAST)
    assert geo.history_["train_gen_regression"].eq(0).all()  # L_geo replaces the factor regression
    assert np.isfinite(geo.history_["train_total"]).all()


def test_training_plans_keep_weighted_epoch_means():
    import torch

    from gearsx.train._plans import _Plan

    plan = _Plan()
    plan.add_to_epoch({"train_total": torch.tensor(1.0, requires_grad=True), "sigma_data": 3.0}, 2)
    plan.add_to_epoch({"train_total": torch.tensor(4.0), "sigma_data": 0.0}, 1)
    assert plan.pop_epoch_means() == {"train_total": 2.0, "sigma_data": 2.0}  # (1*2 + 4) / 3, (3*2 + 0) / 3
    assert plan.pop_epoch_means() == {}  # a new epoch starts empty


def test_train_defaults_take_a_small_reference():
    """A slide of fewer training spots than 128 failed at the defaults ("fewer than the miniset size n_min=128")."""
    small = _synthetic(n_per_slide=90, n_slides=2)
    small = small[np.r_[0:90, 90:150]].copy()  # slides of 90 and 60 spots
    fast = {"max_epochs": 1, "n_batches": 2, "batch_size": 2, "progress": False}
    geo = gx.model.GEARS(small, slide_key="slide", **_TINY)
    geo.train(random_state=0, **fast)
    assert geo.train_params_["n_train_spots"] == 120  # a 20% band of each slide was held out for validation
    held = small.obs["slide"].to_numpy() == "s1"
    n_min = geo.train_params_["n_min"]
    assert n_min == 48  # the smaller slide's training spots (80% of 60), not 128
    # the default is the number written down: the same model when it is passed explicitly
    same = gx.model.GEARS(small, slide_key="slide", **_TINY)
    same.train(random_state=0, n_min=n_min, **fast)
    idx = np.flatnonzero(held)[:40]
    np.testing.assert_array_equal(geo.predict_geometry(small, idx), same.predict_geometry(small, idx))
    # large slides keep 128
    big = gx.model.GEARS(_synthetic(n_per_slide=300, n_slides=1), **_TINY)
    big.train(random_state=0, **fast)
    assert big.train_params_["n_min"] == 128
    with pytest.raises(ValueError, match="n_min=100"):  # a number is used as given
        gx.model.GEARS(small, slide_key="slide", **_TINY).train(n_min=100, **fast)


def test_train_auto_validation_keeps_a_tiny_slide_whole(caplog):
    """A slide of fewer than ~40 spots failed 'auto' validation ("fewer than the smallest miniset")."""
    data = _synthetic(n_per_slide=90, n_slides=2)
    data = data[np.r_[0:90, 90:120]].copy()  # slides of 90 and 30 spots: the second's band holds 6
    fast = {"max_epochs": 1, "n_batches": 2, "batch_size": 2, "progress": False, "random_state": 0}
    geo = gx.model.GEARS(data, slide_key="slide", **_TINY)
    with caplog.at_level("WARNING", logger="gearsx"):
        geo.train(**fast)
    assert geo.train_params_["n_validation_spots"] == 18  # the 90-spot slide's band only
    assert geo.train_params_["n_train_spots"] == 72 + 30
    assert "['s1'] train on all their spots" in geo.train_params_["validation"]
    assert "train on all their spots" in caplog.text
    alone = gx.model.GEARS(data[data.obs["slide"] == "s1"].copy(), slide_key="slide", **_TINY)
    alone.train(**fast)  # no slide large enough: no validation, said so
    assert alone.train_params_["n_validation_spots"] == 0
    assert alone.train_params_["validation"].startswith("none")
    with pytest.raises(ValueError, match="validation spots"):  # asked for by name, it stays an error
        gx.model.GEARS(data, slide_key="slide", **_TINY).train(validation="region", **fast)
