from importlib.metadata import version

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from packaging.version import Version

import gearsx as gx
from tests.conftest import shared_file


def _check_conservation(cells, spots):
    cell_spot = spots.uns["pseudo_spots"]["cell_spot"]
    assert cell_spot.shape == (cells.n_obs,)
    inside = cell_spot >= 0
    # Every assigned cell is counted once: spot sums equal the sums of their cells.
    x = cells.X.toarray() if sp.issparse(cells.X) else np.asarray(cells.X)
    y = spots.X.toarray() if sp.issparse(spots.X) else np.asarray(spots.X)
    expected = np.zeros_like(y, dtype=np.float64)
    np.add.at(expected, cell_spot[inside], x[inside])
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    np.testing.assert_allclose(y.sum(), x[inside].sum(), rtol=1e-5)
    np.testing.assert_array_equal(np.bincount(cell_spot[inside], minlength=spots.n_obs), spots.obs["n_cells"])
    return inside


def test_conservation_on_simulated_cells(small_tissue):
    _, cells = small_tissue
    cells = cells.copy()
    cells.obsm["spatial"] = cells.obsm["spatial_gt"]
    spots = gx.datasets.pseudo_spots(cells, spot_diameter=88.0, center_to_center=160.0, label_key="cell_type")
    inside = _check_conservation(cells, spots)
    # Assigned cells lie within the spot radius of their spot centre.
    centre = spots.obsm["spatial"][spots.uns["pseudo_spots"]["cell_spot"][inside]]
    assert np.linalg.norm(cells.obsm["spatial"][inside] - centre, axis=1).max() <= 44.0 + 1e-9
    np.testing.assert_array_equal(spots.obsm["spot_cell_counts"].to_numpy().sum(1), spots.obs["n_cells"])
    assert spots.obs["cell_type"].dtype == "category"


def test_unlabelled_cells_count_in_the_spots_but_in_no_category(small_tissue, caplog):
    _, cells = small_tissue
    cells = cells.copy()
    cells.obsm["spatial"] = cells.obsm["spatial_gt"]
    kw = {"spot_diameter": 88.0, "center_to_center": 160.0}
    full = gx.datasets.pseudo_spots(cells, label_key="cell_type", **kw)
    cell_spot = full.uns["pseudo_spots"]["cell_spot"]
    # every cell of the first spot loses its label: that spot keeps its expression and cell count,
    # and its category counts and majority go; the other spots are unchanged
    first = cell_spot == 0
    cells.obs["partial"] = cells.obs["cell_type"].astype(object)
    cells.obs.loc[first, "partial"] = np.nan
    with caplog.at_level("WARNING", logger="gearsx"):
        part = gx.datasets.pseudo_spots(cells, label_key="partial", **kw)
    assert f"{int(first.sum())} of the {cells.n_obs} cells have no label" in caplog.text
    np.testing.assert_allclose(part.X.toarray(), full.X.toarray())
    np.testing.assert_array_equal(part.obs["n_cells"], full.obs["n_cells"])
    counts = part.obsm["spot_cell_counts"][full.obsm["spot_cell_counts"].columns].to_numpy()
    assert counts[0].sum() == 0
    np.testing.assert_array_equal(counts[1:], full.obsm["spot_cell_counts"].to_numpy()[1:])
    assert np.isnan(part.obs["partial"].cat.codes.replace(-1, np.nan).iloc[0])
    assert (part.obs["partial"].astype(str).iloc[1:] == full.obs["cell_type"].astype(str).iloc[1:]).all()
    cells.obs["score"] = np.linspace(0, 1, cells.n_obs)  # a continuous column: one "category" per cell
    with pytest.raises(ValueError, match=r"holds floats; `label_key` needs groups"):
        gx.datasets.pseudo_spots(cells, label_key="score", **kw)


def test_slides_get_their_own_spots(small_tissue, caplog):
    import pandas as pd

    _, cells = small_tissue
    one = cells.copy()
    one.obsm["spatial"] = one.obsm["spatial_gt"]
    two = ad.concat([one, one], label="section", keys=["a", "b"], index_unique="-")  # two sections, same frame
    two.obsm["spatial"] = np.vstack([one.obsm["spatial"], one.obsm["spatial"]])
    two.obs["cell_type"] = pd.Categorical(two.obs["cell_type"])
    kw = {"spot_diameter": 88.0, "center_to_center": 160.0, "label_key": "cell_type"}
    alone = gx.datasets.pseudo_spots(one, **kw)
    spots = gx.datasets.pseudo_spots(two, slide_key="section", **kw)
    _check_conservation(two, spots)
    assert spots.n_obs == 2 * alone.n_obs  # each section's spots, none summing cells of both
    assert list(spots.obs["section"].value_counts().sort_index()) == [alone.n_obs, alone.n_obs]
    for section in ("a", "b"):
        part = spots[spots.obs["section"] == section]
        np.testing.assert_allclose(part.X.toarray(), alone.X.toarray())
        np.testing.assert_array_equal(part.obsm["spot_cell_counts"], alone.obsm["spot_cell_counts"])
        assert part.obs_names[0].startswith(f"{section}_spot_")
    cell_spot = spots.uns["pseudo_spots"]["cell_spot"]
    inside = cell_spot >= 0
    np.testing.assert_array_equal(spots.obs["section"].to_numpy()[cell_spot[inside]], two.obs["section"][inside])
    # without a slide key the sections are pooled, and a column that looks like one is named
    two.obs = two.obs.rename(columns={"section": "slice"})  # MERFISH's name for it
    with caplog.at_level("WARNING", logger="gearsx"):
        pooled = gx.datasets.pseudo_spots(two, **kw)
    assert "`adata.obs['slice']` holds 2 values" in caplog.text
    assert pooled.n_obs == alone.n_obs
    np.testing.assert_allclose(pooled.X.toarray(), 2 * alone.X.toarray())


def test_conservation_on_real_osmfish():
    cells = ad.read_h5ad(shared_file("osmfish_mouse_sscortex", "osmfish_mouse_sscortex.h5ad"))
    # Coordinates are image pixels; the QC columns give the pixel size, so we can lay 55 µm spots 100 µm apart.
    um_per_px = float(np.sqrt(np.median(cells.obs["size_um2"] / cells.obs["size_pix"])))
    spots = gx.datasets.pseudo_spots(
        cells,
        spot_diameter=55.0 / um_per_px,
        center_to_center=100.0 / um_per_px,
        label_key="ClusterName",
        min_cells=2,
    )
    inside = _check_conservation(cells, spots)
    assert spots.n_obs > 100
    assert (spots.obs["n_cells"] >= 2).all()
    assert 0.1 < inside.mean() < 0.6  # Visium spots cover a minority of the tissue area
    print(f"osmFISH: {cells.n_obs} cells -> {spots.n_obs} pseudo-spots, {inside.mean():.1%} of cells inside spots")


def test_dense_input_and_overlapping_spots():
    rng = np.random.default_rng(0)
    cells = ad.AnnData(rng.poisson(1.0, (500, 5)).astype(np.float32))
    cells.obsm["spatial"] = rng.uniform(0, 100, (500, 2))
    # Spots larger than their spacing: every cell goes to its nearest spot only.
    spots = gx.datasets.pseudo_spots(cells, spot_diameter=30.0, center_to_center=10.0, layout="square")
    assert isinstance(spots.X, np.ndarray)
    inside = _check_conservation(cells, spots)
    assert inside.all()


def test_bad_input():
    cells = ad.AnnData(np.ones((20, 3), dtype=np.float32))
    with pytest.raises(KeyError, match="spatial"):
        gx.datasets.pseudo_spots(cells, spot_diameter=1.0, center_to_center=2.0)
    cells.obsm["spatial"] = np.full((20, 2), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        gx.datasets.pseudo_spots(cells, spot_diameter=1.0, center_to_center=2.0)
    cells.obsm["spatial"] = np.random.default_rng(0).uniform(0, 10, (20, 2))
    with pytest.raises(ValueError, match="layout"):
        gx.datasets.pseudo_spots(cells, spot_diameter=1.0, center_to_center=2.0, layout="triangle")
    with pytest.raises(ValueError, match="spot_diameter"):
        gx.datasets.pseudo_spots(cells, spot_diameter=-1.0, center_to_center=2.0)
    with pytest.raises(ValueError, match="No spot holds"):
        gx.datasets.pseudo_spots(cells, spot_diameter=1e-6, center_to_center=2.0, min_cells=5)
    with pytest.raises(KeyError, match="label_key"):
        gx.datasets.pseudo_spots(cells, spot_diameter=1.0, center_to_center=2.0, label_key="type")


_SPOTS = {"spot_diameter": 88.0, "center_to_center": 160.0}


def _cells_and_logged(small_tissue):
    """The simulator's cells at their true positions, and a log-normalised copy (with its record)."""
    import scanpy as sc

    cells = small_tissue[1].copy()
    cells.obsm["spatial"] = cells.obsm["spatial_gt"]
    logged = cells.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    return cells, logged


def test_values_that_cannot_be_summed_are_refused(small_tissue):
    cells, logged = _cells_and_logged(small_tissue)
    kw = _SPOTS
    before = logged.X.copy()
    with pytest.raises(ValueError, match="log-transformed"):
        gx.datasets.pseudo_spots(logged, **kw)
    assert (logged.X != before).nnz == 0  # untouched
    scaled = cells.copy()
    scaled.X = scaled.X.toarray() - 1.0
    with pytest.raises(ValueError, match="negative"):
        gx.datasets.pseudo_spots(scaled, **kw)
    # counts put back into X under a stale record are summed as they are
    logged.X = cells.X.copy()
    spots = gx.datasets.pseudo_spots(logged, **kw)
    assert spots.X.sum() == pytest.approx(cells.X[spots.uns["pseudo_spots"]["cell_spot"] >= 0].sum(), rel=1e-5)


def test_log_values_without_their_record_draw_a_warning(small_tissue, caplog):
    import scanpy as sc

    cells, logged = _cells_and_logged(small_tissue)
    kw = _SPOTS
    del logged.uns["log1p"]  # lost, as after a round trip through a tool that drops uns
    with caplog.at_level("WARNING", logger="gearsx"):
        gx.datasets.pseudo_spots(logged, **kw)
    assert "looks log-transformed" in caplog.text
    caplog.clear()
    normalised = cells.copy()  # non-integer but additive, on the counts' scale: summed without a word
    sc.pp.normalize_total(normalised, target_sum=1e4)
    with caplog.at_level("WARNING", logger="gearsx"):
        gx.datasets.pseudo_spots(normalised, **kw)
    assert "looks log-transformed" not in caplog.text


def test_labels_with_a_slash_draw_a_warning_naming_the_rename(small_tissue, caplog, tmp_path):
    """A category like ``'L2/3 IT'`` names a column of ``obsm['spot_cell_counts']``, which zarr refuses.

    The spots are made all the same, with a warning that names the labels and the rename; after the
    rename they are written to zarr and read back with their counts.
    """
    _, cells = small_tissue
    cells = cells.copy()
    cells.obsm["spatial"] = cells.obsm["spatial_gt"]
    cells.obs["cell_type"] = cells.obs["cell_type"].astype(str).str.replace("type_", "L/").astype("category")
    kw = {"spot_diameter": 88.0, "center_to_center": 160.0, "label_key": "cell_type"}
    with caplog.at_level("WARNING", logger="gearsx"):
        spots = gx.datasets.pseudo_spots(cells, **kw)
    assert "hold a '/'" in caplog.text
    assert "str.replace('/', '-')" in caplog.text
    if Version(version("anndata")) >= Version("0.12"):  # the refusal the warning foresees (anndata 0.11 wrote them)
        with pytest.raises(ValueError, match="Forward slashes"):
            spots.write_zarr(tmp_path / "slashed.zarr")
    cells.obs["cell_type"] = cells.obs["cell_type"].astype(str).str.replace("/", "-").astype("category")
    caplog.clear()
    with caplog.at_level("WARNING", logger="gearsx"):
        renamed = gx.datasets.pseudo_spots(cells, **kw)
    assert "hold a '/'" not in caplog.text
    renamed.write_zarr(tmp_path / "renamed.zarr")
    back = ad.read_zarr(tmp_path / "renamed.zarr")
    np.testing.assert_array_equal(back.obsm["spot_cell_counts"].to_numpy(), spots.obsm["spot_cell_counts"].to_numpy())
