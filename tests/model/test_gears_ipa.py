"""GEARS(structure='ipa'): training phases, reproducibility, save/load, attention, reconstruct, plots."""

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

import gearsx as gx
from gearsx.module._structure import spatial_graph
from tests.model.test_gears import _synthetic

_TINY = {"n_out": 8, "dim": 32, "n_inducing": 8, "n_context_blocks": 1, "n_generator_blocks": 1}
_IPA = {**_TINY, "structure": "ipa", "n_recycles": 3, "k_candidates": 20}
_FAST = {"max_epochs": 4, "n_batches": 4, "batch_size": 2, "n_min": 40, "n_max": 60, "progress": False}


@pytest.fixture(scope="module")
def ipa_model():
    adata = _synthetic()
    geo = gx.model.GEARS(adata, slide_key="slide", **_IPA)
    geo.train(random_state=0, **_FAST)
    return adata, geo


def test_ipa_trains_gate_then_structure(ipa_model):
    adata, geo = ipa_model
    hist = geo.history_
    assert {"train_gate_kl", "train_gate_rank", "train_structure", "val_spearman"} <= set(hist)
    # the gate learns during pretraining; the structure loss is 0 before refine_start, then positive
    assert hist["train_gate_kl"].iloc[-1] < hist["train_gate_kl"].iloc[0]
    assert hist["train_structure"].iloc[0] == 0
    assert hist["train_structure"].iloc[-1] > 0
    assert np.abs(geo.module.structure.coord.detach().cpu().numpy()).sum() > 0  # the coordinate update moved
    xy = geo.predict_geometry(indices=np.arange(60))
    assert xy.shape == (60, 2)
    with pytest.raises(ValueError, match="n_components"):
        geo.predict_geometry(indices=np.arange(60), n_components=3)


def test_ipa_seeded_and_save_load(ipa_model, tmp_path, device_atol):
    adata, geo = ipa_model
    again = gx.model.GEARS(adata, slide_key="slide", **_IPA)
    again.train(random_state=0, **_FAST)
    for (name, p), q in zip(geo.module.state_dict().items(), again.module.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    geo.save(tmp_path / "ipa")
    loaded = gx.model.GEARS.load(tmp_path / "ipa", adata, accelerator="cpu")
    assert loaded._module_kwargs["structure"] == "ipa"
    idx = np.arange(100, 160)
    np.testing.assert_allclose(
        loaded.predict_geometry(indices=idx), geo.predict_geometry(indices=idx), atol=device_atol
    )
    np.testing.assert_allclose(
        loaded.get_attention(indices=idx)["attention"], geo.get_attention(indices=idx)["attention"], atol=device_atol
    )


def test_ipa_saved_with_the_refiner_layers_of_older_versions_loads(ipa_model, tmp_path):
    """Before the generator-only default every model carried (untrained, unused) refiner layers; IPA saves still load."""
    adata, geo = ipa_model
    geo.save(tmp_path / "ipa")
    state_file = tmp_path / "ipa" / "model.pt"
    state = torch.load(state_file, weights_only=True)
    # the layers an older gearsx saved with every model: a refiner module of the same sizes holds them
    kwargs = {k: v for k, v in geo._module_kwargs.items() if k not in ("structure", "targets")}
    refiner = gx.module.GearsModule(geo.n_input, **kwargs, structure="refiner").state_dict()
    layers = ("ref_in", "noise_emb", "ref_blocks", "ref_head")
    old = {f"module.{k}": v for k, v in refiner.items() if k.split(".")[0] in layers}
    assert old
    torch.save({**state, **old}, state_file)
    loaded = gx.model.GEARS.load(tmp_path / "ipa", adata, accelerator="cpu")
    assert loaded.structure == "ipa"
    assert not any(k.startswith("ref_") for k in loaded.module.state_dict())
    idx = np.arange(100, 160)
    np.testing.assert_allclose(loaded.predict_geometry(indices=idx), geo.predict_geometry(indices=idx), atol=1e-6)


def test_get_attention_inference_and_oracle_paths(ipa_model):
    adata, geo = ipa_model
    idx = np.arange(50, 110)
    out = geo.get_attention(indices=idx)
    att, graph = out["attention"], out["graph"]
    assert att.shape == (3, 4, 60, 60)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    allowed = graph | np.eye(60, dtype=bool)
    assert np.all(att[..., ~allowed] == 0)
    assert out["coords"].shape == (3, 60, 2)
    assert geo.get_attention(indices=idx, recycle=-1)["attention"].shape == (4, 60, 60)
    xy = adata.obsm["spatial"][idx]
    oracle = geo.get_attention(indices=idx, oracle_coords=xy)
    t = torch.as_tensor(xy - xy.mean(0), dtype=torch.float32)[None]
    expected = spatial_graph(t, torch.ones(1, 60, dtype=torch.bool), geo.module.structure.k_oracle)[0].numpy()
    assert np.array_equal(oracle["graph"], expected)
    assert not np.array_equal(oracle["graph"], graph)
    with pytest.raises(ValueError, match="recycle"):
        geo.get_attention(indices=idx, recycle=3)
    with pytest.raises(ValueError, match="oracle_coords"):
        geo.get_attention(indices=idx, oracle_coords=xy[:5])
    plain = gx.model.GEARS(adata, slide_key="slide", **_TINY)
    plain.train(**{**_FAST, "max_epochs": 1})
    with pytest.raises(ValueError, match=r"structure='ipa'; this one has the generator alone \(structure=None\)"):
        plain.get_attention(indices=idx)  # it named a refiner the model does not have


def test_reconstruct_unchanged_with_ipa(ipa_model):
    adata, geo = ipa_model
    cells = adata.copy()
    gx.tl.reconstruct(cells, geo, n_patch=80, allow_unadapted=True, progress=False)
    rec = cells.obsm["X_gears_spatial"]
    assert rec.shape == (cells.n_obs, 2)
    assert np.isfinite(rec).all()
    # slide 0 alone: the layout keeps the neighbourhoods of the true positions far better than chance
    s0 = (cells.obs["slide"] == "s0").to_numpy()
    assert gx.metrics.knn_overlap(rec[s0], adata.obsm["spatial"][s0], k=15) > 0.1


def test_attention_windows_do_not_depend_on_the_layouts_units_or_origin(ipa_model):
    """On a grid layout many cells lie equally far from the centre: the window and the queries go by index."""
    adata, geo = ipa_model
    st = adata[adata.obs["slide"] == "s0"].copy()
    side = int(np.ceil(np.sqrt(st.n_obs)))
    i, j = np.meshgrid(np.arange(side), np.arange(side))
    grid = np.column_stack([(i + 0.5 * (j % 2)).ravel(), (j * np.sqrt(3) / 2).ravel()])[: st.n_obs]
    picks = []
    for scale, shift in [(1.0, 0.0), (0.01, 0.0), (137.3, 1017.0)]:
        st.obsm["grid"] = grid * scale + shift
        gx.tl.attention(st, geo, n_query=3, n_cells=80, basis="grid")
        record = st.uns["gears_attention"]
        picks.append((record["members"].tolist(), record["queries"].tolist()))
    assert picks[1] == picks[0]
    assert picks[2] == picks[0]


def test_attention_plots(ipa_model):
    adata, geo = ipa_model
    st = adata[adata.obs["slide"] == "s0"].copy()
    gx.tl.attention(st, geo, n_query=2, n_cells=80)
    assert st.uns["gears_attention"]["weights"].shape == (2, 80)
    axes = gx.pl.attention(st, k_true=8, show=False)
    assert len(axes) == 2
    for ax in axes:
        pts = ax.collections[0].get_offsets()
        assert len(pts) == 80
        assert "recall@8" in ax.get_title()
        assert ax.yaxis_inverted()  # the slide's coordinates, drawn as sc.pl.spatial draws them
    # the first default query is the cell nearest the layout centre
    xy = st.obsm["spatial"]
    centre = int(cKDTree(xy).query(xy.mean(0))[1])
    assert axes[0].get_title().startswith(st.obs_names[centre])
    table = gx.tl.attention_summary(st, geo, n_sets=3, n_cells=60, k=5)
    ax_list = gx.pl.attention_summary(st, show=False)
    assert len(ax_list) == 2
    assert len(ax_list[0].lines) >= 2  # inference and oracle paths
    assert len(table) == 3 * 3 * 2
    assert table["recall"].between(0, 1).all()
    assert set(table["path"]) == {"inference", "oracle"}
    with pytest.raises(ValueError, match="not among"):
        gx.tl.attention(st, geo, query_cells=[0, st.n_obs - 1], n_cells=10)
    with pytest.raises(TypeError, match="neither an `obs_names` entry nor an integer"):  # was truncated to 2
        gx.tl.attention(st, geo, query_cells=[2.7], n_cells=10)
    with pytest.raises(TypeError, match="never runs a model"):
        gx.pl.attention(st, geo, show=False)
    with pytest.raises(TypeError, match="never runs a model"):
        gx.pl.attention_summary(st, geo, show=False)
    plt.close("all")


def test_attention_names_bad_arguments_before_writing(ipa_model):
    """Each was accepted (or failed in numpy) and wrote a result the plot could not use, or scored 1 by construction."""
    adata, geo = ipa_model
    st = adata[adata.obs["slide"] == "s0"].copy()
    one = st.copy()
    gx.tl.attention(one, geo, query_cells=st.obs_names[5], n_cells=40)  # a bare name is one query, not its letters
    np.testing.assert_array_equal(one.uns["gears_attention"]["queries"], [5])
    cases = [
        ({"query_cells": []}, ValueError, "`query_cells` is empty"),  # was numpy's "index 0 is out of bounds"
        ({"query_cells": [3, 3]}, ValueError, "more than once"),  # drew the same query twice
        ({"head": 0.5}, ValueError, "`head` must be an integer"),  # was numpy's "only integers ... are valid indices"
        ({"truth_key": "nope"}, KeyError, "nope"),  # was written, then failed in the plot
    ]
    for kw, exc, match in cases:
        fresh = st.copy()
        with pytest.raises(exc, match=match):
            gx.tl.attention(fresh, geo, n_cells=40, **kw)
        assert "gears_attention" not in fresh.uns
    twice = st.copy()  # two slides' barcodes concatenated without `index_unique`
    twice.obs_names = [st.obs_names[i % 7] for i in range(st.n_obs)]
    with pytest.raises(ValueError, match="names several cells"):
        gx.tl.attention(twice, geo, query_cells=st.obs_names[5], n_cells=40)  # was numpy's IndexError
    assert "gears_attention" not in twice.uns
    with pytest.raises(ValueError, match="`n_sets` must be an integer"):  # 2.5 was cut to 2; 0 named `m`
        gx.tl.attention_summary(st, geo, n_sets=2.5)
    with pytest.raises(ValueError, match="`k`=10 must be smaller than n_cells - 1 = 9"):  # recall 1 whatever the model
        gx.tl.attention_summary(st, geo, n_sets=2, n_cells=10, k=10)
    gx.tl.attention(one, geo, n_cells=40)
    with pytest.raises(ValueError, match="`k_true`=39 must be smaller than 39"):  # recall@39 of 39 others: 1.00
        gx.pl.attention(one, k_true=39, show=False)
    plt.close("all")
