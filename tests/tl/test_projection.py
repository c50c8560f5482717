"""gx.tl.project_groups: per-spot maps of where anchored cells land, on a planted layout."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import gearsx as gx
from tests.tl.test_anchored import _FAST, _reference_and_query


@pytest.fixture(scope="module")
def anchored():
    """The toy reference, a model on it and its cells anchored, each labelled by the half it truly lies in."""
    st, sc = _reference_and_query()
    geo = gx.model.GEARS(st, slide_key="slide", n_out=8, dim=32, n_inducing=8, n_context_blocks=1, n_generator_blocks=1)
    geo.train(max_epochs=2, n_batches=4, batch_size=2, n_min=64, n_max=128, validation=None, progress=False)
    gx.tl.reconstruct(sc, geo, anchor="reference", **_FAST)
    sc.obs["half"] = pd.Categorical(np.where(sc.obsm["spatial_gt"][:, 0] < 5, "left", "right"))
    return st, sc, geo


def test_each_half_lands_on_its_half_and_every_cell_counts_once(anchored):
    st, sc, _ = anchored
    st = st.copy()
    gx.tl.project_groups(sc, st, "half")
    m = st.obsm["gears_half"]
    assert list(m.columns) == ["left", "right"]
    assert m.index.equals(st.obs_names)
    # every cell's weights sum to one: a group's column holds its number of cells
    np.testing.assert_allclose(m.sum().to_numpy(), sc.obs["half"].value_counts()[["left", "right"]].to_numpy())
    np.testing.assert_allclose(sc.obsm["gears_anchor_weights"].sum(1), 1.0, rtol=1e-5)
    # the planted answer: spots of the left half hold mostly cells of the left half, and the other way round
    left = st.obsm["spatial"][:, 0] < 5
    share = (m["left"] / m.sum(axis=1)).to_numpy()
    assert np.nanmean(share[left]) > 0.8
    assert np.nanmean(share[~left]) < 0.2
    rec = st.uns["gears_half"]
    assert (rec["params"]["groupby"], rec["slide"], rec["n_cells"], rec["n_cells_without_group"]) == (
        "half",
        "s0",
        sc.n_obs,
        0,
    )


def test_maps_from_files_equal_those_in_memory(anchored, tmp_path):
    # a user saves the reconstruction and the spatial data, and maps the groups in a later session
    st, sc, _ = anchored
    direct = st.copy()
    gx.tl.project_groups(sc, direct, "half")
    sc.write_h5ad(tmp_path / "cells.h5ad")
    st.write_h5ad(tmp_path / "spots.h5ad")
    cells, spots = ad.read_h5ad(tmp_path / "cells.h5ad"), ad.read_h5ad(tmp_path / "spots.h5ad")
    gx.tl.project_groups(cells, spots, "half")
    np.testing.assert_array_equal(spots.obsm["gears_half"].to_numpy(), direct.obsm["gears_half"].to_numpy())


def test_spots_are_found_in_any_order_and_only_on_the_anchoring_slide(anchored):
    st, sc, _ = anchored
    direct = st.copy()
    gx.tl.project_groups(sc, direct, "half")
    # the same spots shuffled, beside another slide whose spots stand at the very same coordinates
    other = st.copy()
    other.obs_names = [f"other_{i}" for i in range(other.n_obs)]
    other.obs["slide"] = pd.Categorical(["s1"] * other.n_obs)
    both = ad.concat([st, other])
    both.obs["slide"] = both.obs["slide"].astype("category")
    both = both[np.random.default_rng(0).permutation(both.n_obs)].copy()
    gx.tl.project_groups(sc, both, "half")
    m = both.obsm["gears_half"]
    np.testing.assert_allclose(m.loc[st.obs_names].to_numpy(), direct.obsm["gears_half"].to_numpy())
    assert m.loc[other.obs_names].isna().all().all()


def test_spots_stored_in_float32_are_found(anchored):
    # pixel coordinates far from the origin, saved in float32: off the model's float64 copy by its rounding
    st, sc, _ = anchored
    direct = st.copy()
    gx.tl.project_groups(sc, direct, "half")
    rounded = st[np.random.default_rng(2).permutation(st.n_obs)].copy()
    rounded.obsm["spatial"] = rounded.obsm["spatial"].astype(np.float32)
    gx.tl.project_groups(sc, rounded, "half")
    np.testing.assert_allclose(
        rounded.obsm["gears_half"].loc[st.obs_names].to_numpy(), direct.obsm["gears_half"].to_numpy()
    )


def test_normalized_maps_give_each_spots_shares(anchored):
    st, sc, _ = anchored
    st = st.copy()
    gx.tl.project_groups(sc, st, "half", normalize=True, key_added="shares")
    shares = st.obsm["shares"].to_numpy()
    reached = ~np.isnan(shares).any(1)
    assert reached.mean() > 0.5
    np.testing.assert_allclose(shares[reached].sum(1), 1.0)
    gx.tl.project_groups(sc, st, "half")
    counts = st.obsm["gears_half"].to_numpy()
    assert (counts[~reached] == 0).all()  # spots no cell weighs on: no share to give


def test_cells_without_a_group_or_a_count_are_left_out(anchored):
    st, sc, geo = anchored
    cells = sc.copy()
    cells.obs.loc[cells.obs_names[:25], "half"] = np.nan
    out = gx.tl.project_groups(cells, st, "half", copy=True)
    assert out.obsm["gears_half"].to_numpy().sum() == pytest.approx(cells.n_obs - 25)
    assert out.uns["gears_half"]["n_cells_without_group"] == 25
    assert "gears_half" not in st.obsm  # copy=True left the spatial data as it was
    # cells without a single count carry no weight: their matches say nothing about where they lie
    _, fresh = _reference_and_query()
    fresh.X = np.ones((fresh.n_obs, 1), dtype=np.float32)
    fresh.X[:30] = 0
    gx.tl.reconstruct(fresh, geo, anchor="reference", **_FAST)
    assert (fresh.obsm["gears_anchor_weights"][:30] == 0).all()
    fresh.obs["all"] = pd.Categorical(["cells"] * fresh.n_obs)
    mapped = gx.tl.project_groups(fresh, st, "all", copy=True)
    assert mapped.obsm["gears_all"]["cells"].sum() == pytest.approx(fresh.n_obs - 30, rel=1e-5)


def test_an_intrinsic_run_drops_the_matches_of_an_earlier_anchored_one(anchored):
    _, sc, geo = anchored
    cells = sc.copy()
    gx.tl.reconstruct(cells, geo, anchor=None, **_FAST)
    assert not {"gears_anchor_spots", "gears_anchor_weights"} & set(cells.obsm)


def _unchanged(st):
    return (tuple(st.obsm), tuple(st.uns), st.obs_names.tolist())


@pytest.mark.parametrize(
    ("edit", "exc", "match"),
    [
        (lambda sc, st: (sc, st, "nope"), KeyError, "`groupby`='nope'"),
        (lambda sc, st: (_floats(sc), st, "score"), ValueError, "holds floats"),
        (lambda sc, st: (_intrinsic(sc), st, "half"), ValueError, "not anchored"),
        (lambda sc, st: (_no_matches(sc), st, "half"), ValueError, "older gearsx"),
        (lambda sc, st: (sc, st[:100].copy(), "half"), ValueError, "lacks 800 of the 900 spots"),
        (lambda sc, st: (sc, _no_slide_column(st), "half"), KeyError, "slide column"),
        (lambda sc, st: (sc, _stacked(st), "half"), ValueError, "share their coordinates"),
    ],
    ids=["missing-groupby", "float-groups", "intrinsic", "no-matches", "missing-spots", "no-slide-column", "stacked"],
)
def test_bad_input_names_the_fix_and_writes_nothing(anchored, edit, exc, match):
    st, sc, _ = anchored
    cells, spots, groupby = edit(sc.copy(), st.copy())
    before = _unchanged(spots)
    with pytest.raises(exc, match=match):
        gx.tl.project_groups(cells, spots, groupby)
    assert _unchanged(spots) == before


@pytest.mark.parametrize("key_added", ["spatial", "a/b"])
def test_the_map_never_overwrites_the_coordinates_or_breaks_the_file(anchored, key_added):
    st, sc, _ = anchored
    spots = st.copy()
    with pytest.raises(ValueError, match="key_added"):
        gx.tl.project_groups(sc, spots, "half", key_added=key_added)
    assert _unchanged(spots) == _unchanged(st)


def _floats(sc):
    sc.obs["score"] = np.linspace(0, 1, sc.n_obs)
    return sc


def _intrinsic(sc):
    sc.uns["gears"] = {**sc.uns["gears"], "anchor": {**sc.uns["gears"]["anchor"], "mode": "intrinsic"}}
    return sc


def _no_matches(sc):
    del sc.obsm["gears_anchor_spots"]
    return sc


def _no_slide_column(st):
    del st.obs["slide"]
    return st


def _stacked(st):
    """The slide shuffled, with one spot moved onto another's position: the two cannot be told apart."""
    st = st[np.random.default_rng(1).permutation(st.n_obs)].copy()
    xy = np.array(st.obsm["spatial"])
    xy[1] = xy[0]
    st.obsm["spatial"] = xy
    return st
