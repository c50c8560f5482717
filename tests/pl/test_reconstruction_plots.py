import matplotlib

matplotlib.use("agg")
import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import gearsx as gx


@pytest.fixture
def stitched(rng):
    xy = rng.uniform(size=(600, 2))
    adata = ad.AnnData(rng.poisson(1.0, size=(600, 4)).astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(4)]
    adata.obs["domain"] = pd.Categorical(np.where(xy[:, 0] < 0.5, "left", "right"))
    adata.obsm["spatial_gt"] = xy
    halves = [np.flatnonzero(xy[:, 0] < 0.6), np.flatnonzero(xy[:, 0] > 0.4)]
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    gx.tl.stitch(adata, [(i, 3 * xy[i] @ rot) for i in halves])
    return adata


def test_reconstruction_side_by_side_aligned(stitched):
    axes = gx.pl.reconstruction(stitched, color="domain", show=False)
    assert len(axes) == 2
    assert axes[0].get_title() == "ground truth: domain"
    # two categories -> two scatter collections per panel, all cells drawn
    for ax in axes:
        assert sum(len(c.get_offsets()) for c in ax.collections) == stitched.n_obs
    # the displayed reconstruction is aligned onto the truth (Procrustes with scale)
    gt = np.concatenate([c.get_offsets() for c in axes[0].collections])
    shown = np.concatenate([c.get_offsets() for c in axes[1].collections])
    assert np.abs(shown - gt).max() < 0.05
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["left", "right"]
    # legend markers keep one size, whatever the points' size (which follows the number of cells)
    for n in (stitched.n_obs, 40):
        panels = gx.pl.reconstruction(stitched[:n].copy(), color="domain", show=False)
        assert {float(h.get_sizes()[0]) for h in panels[1].get_legend().legend_handles} == {30.0}
    plt.close("all")


def test_reconstruction_single_panel_and_gene_colour(stitched):
    ax = gx.pl.reconstruction(stitched, color="g1", gt_key=None, show=False)
    assert ax.get_title() == "X_gears_spatial: g1"
    np.testing.assert_allclose(ax.collections[0].get_array(), stitched[:, "g1"].X.ravel())
    with pytest.raises(KeyError, match="X_nope"):
        gx.pl.reconstruction(stitched, basis="X_nope", show=False)
    plt.close("all")


def test_reconstruction_takes_a_list_of_colours(stitched):
    plt.close("all")
    rows = gx.pl.reconstruction(stitched, color=["domain", "g1"], show=False)
    assert len(rows) == 2
    assert [[a.get_title() for a in row] for row in rows] == [
        ["ground truth: domain", "X_gears_spatial (aligned): domain"],
        ["ground truth: g1", "X_gears_spatial (aligned): g1"],
    ]
    assert len({a.figure for row in rows for a in row}) == 1  # one figure, one row per colour
    np.testing.assert_allclose(rows[1][1].collections[0].get_array(), stitched[:, "g1"].X.ravel())
    single = gx.pl.reconstruction(stitched, color=["g1", "domain"], gt_key=None, show=False)
    assert [a.get_title() for a in single] == ["X_gears_spatial: g1", "X_gears_spatial: domain"]
    # unknown keys and axes for a list fail before anything is drawn
    n_figures = len(plt.get_fignums())
    with pytest.raises(KeyError, match="`color`='nope'"):
        gx.pl.reconstruction(stitched, color=["domain", "nope"], show=False)
    with pytest.raises(ValueError, match="with a list of colours leave ax=None"):
        gx.pl.reconstruction(stitched, color=["domain", "g1"], ax=rows[0], show=False)
    with pytest.raises(ValueError, match="empty list"):
        gx.pl.reconstruction(stitched, color=[], show=False)
    assert len(plt.get_fignums()) == n_figures
    plt.close("all")


def test_distortion_heatmap_shows_the_matrix(stitched, tmp_path):
    ax = gx.pl.distortion_heatmap(stitched, n_blocks=10, show=False, save=str(tmp_path / "h.png"))
    img = ax.images[0].get_array()
    expected, _ = gx.metrics.distortion_matrix(
        stitched.obsm["X_gears_spatial"], stitched.obsm["spatial_gt"], n_blocks=10
    )
    np.testing.assert_allclose(np.asarray(img), expected)
    assert (tmp_path / "h.png").stat().st_size > 1000
    plt.close("all")


def test_distortion_heatmap_refuses_a_scale_it_cannot_draw(stitched):
    for vmax in (-1.0, 0.0, float("nan")):  # an empty or inverted colour scale was drawn without a word
        with pytest.raises(ValueError, match="`vmax` must be a positive number"):
            gx.pl.distortion_heatmap(stitched, vmax=vmax, show=False)
    plt.close("all")


def test_stitching_diagnostics_panels(stitched):
    axes = gx.pl.stitching_diagnostics(stitched, show=False)
    assert len(axes) == 3
    n_patches = sum(p.get_height() for p in axes[0].patches)
    assert n_patches == 2
    n_edges = stitched.obsp["gears_distances"].nnz // 2
    assert axes[2].get_title().startswith(f"{n_edges} edges")
    with pytest.raises(KeyError, match="reconstruct"):
        gx.pl.stitching_diagnostics(stitched, key="other", show=False)
    plt.close("all")


def test_plots_draw_into_given_axes_and_follow_stored_colours(stitched):
    from matplotlib.colors import to_rgba

    stitched.uns["domain_colors"] = ["#ff0000", "#0000ff"]  # scanpy's convention
    fig, axs = plt.subplots(1, 2)
    out = gx.pl.reconstruction(stitched, color="domain", ax=axs, show=False)
    assert out == list(axs)
    left = [c for c in axs[1].collections if c.get_label() == "left"][0]
    assert tuple(left.get_facecolor()[0]) == to_rgba("#ff0000")
    with pytest.raises(ValueError, match="2 axes"):
        gx.pl.reconstruction(stitched, ax=axs[0], show=False)
    fig3, axs3 = plt.subplots(1, 3)
    assert gx.pl.stitching_diagnostics(stitched, ax=axs3, show=False) == list(axs3)
    fig1, ax1 = plt.subplots()
    assert gx.pl.distortion_heatmap(stitched, pred_key="X_gears_spatial", ax=ax1, show=False) is ax1
    # the palette argument wins over the stored colours
    gx.pl.reconstruction(
        stitched, color="domain", gt_key=None, palette={"left": "#00ff00", "right": "k"}, ax=ax1, show=False
    )
    left = [c for c in ax1.collections if c.get_label() == "left"][0]
    assert tuple(left.get_facecolor()[0]) == to_rgba("#00ff00")
    plt.close("all")


def test_every_plot_takes_ax_show_and_save():
    import inspect

    for name in gx.pl.__all__:
        params = inspect.signature(getattr(gx.pl, name)).parameters
        assert {"ax", "show", "save"} <= set(params), name


def test_method_comparison_bars_are_means_over_runs():
    scores = pd.DataFrame(
        {
            "method": ["gearsx", "gearsx", "novoSpaRc", "novoSpaRc"],
            "seed": [0, 1, 0, 1],
            "spearman": [0.8, 0.6, 0.5, 0.3],
            "stress1": [0.2, 0.3, 0.4, 0.5],
        }
    )
    axes = gx.pl.method_comparison(scores, metrics=["spearman", "stress1"], show=False)
    assert len(axes) == 2
    heights = [round(p.get_height(), 6) for p in axes[0].patches if p.get_height() > 0]
    assert heights == [0.7, 0.4]
    assert axes[1].get_title() == "stress1 ↓"
    # the runs are drawn as dots beside the bars
    assert sum(len(c.get_offsets()) for c in axes[0].collections) == 4
    with pytest.raises(KeyError, match="edge_auc"):
        gx.pl.method_comparison(scores, metrics=["edge_auc"], show=False)
    plt.close("all")


def test_method_comparison_keeps_long_method_names_apart():
    """Ten long names (a benchmark's representations): each tick label must sit under its own bar, none overlapping."""
    names = [f"gearsx_domain_{suffix}" for suffix in ("joint_hops1", "hops1", "image", "pc20", "joint")] + [
        "pca", "graphst", "gearsx_encoder", "gearsx_encoder_smoothed", "gearsx_domain",
    ]  # fmt: skip
    scores = pd.DataFrame({"rep": names * 2, "ari": np.linspace(0.1, 0.6, 20), "nmi": np.linspace(0.2, 0.7, 20)})
    axes = gx.pl.method_comparison(scores, metrics=("ari", "nmi"), method_key="rep", show=False)
    fig = axes[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert [t.get_text() for t in labels] == names
        boxes = [t.get_window_extent(renderer) for t in labels]
        for left, right in zip(boxes, boxes[1:], strict=False):
            assert not left.overlaps(right), (left, right)
        assert all(t.get_rotation() == 90 for t in labels)  # too long to stand side by side
        # each label under its own tick, not shifted under a neighbour's bar
        ticks = ax.transData.transform(np.column_stack([ax.get_xticks(), np.zeros(len(names))]))[:, 0]
        pitch = float(np.diff(ticks).mean())
        centres = np.array([(b.x0 + b.x1) / 2 for b in boxes])
        assert np.abs(centres - ticks).max() < 0.25 * pitch
    plt.close("all")
    # two short names stay level, side by side
    axes = gx.pl.method_comparison(
        scores.replace({"pca": "PCA", "graphst": "GraphST"}).iloc[[5, 6]], metrics="ari", method_key="rep", show=False
    )
    fig = axes[0].figure
    fig.canvas.draw()
    labels = [t for t in axes[0].get_xticklabels() if t.get_text()]
    assert [t.get_rotation() for t in labels] == [0, 0]
    left, right = (t.get_window_extent(fig.canvas.get_renderer()) for t in labels)
    assert not left.overlaps(right)
    plt.close("all")


def test_method_comparison_refuses_what_it_would_misdraw():
    scores = pd.DataFrame({"method": ["gearsx", "gearsx", "peer"], "spearman": [0.8, np.nan, 0.5]})
    # a missing run: the bar is the mean of the others (0.8, not 0.4), and the plot says so
    with pytest.warns(UserWarning, match=r"missing for 1 row\(s\) \(methods \['gearsx'\]\)"):
        axes = gx.pl.method_comparison(scores, metrics=["spearman"], show=False)
    assert [round(p.get_height(), 6) for p in axes[0].patches if p.get_height() > 0] == [0.8, 0.5]
    # scores read as text (a CSV with a stray "n/a") were drawn as categories
    with pytest.raises(TypeError, match=r"\['spearman'\] are not numeric"):
        gx.pl.method_comparison(scores.astype({"spearman": str}), metrics=["spearman"], show=False)
    with pytest.raises(ValueError, match="no rows"):
        gx.pl.method_comparison(scores.iloc[:0], metrics=["spearman"], show=False)
    # one metric by name: it was read letter by letter ("lacks the column(s) ['s', 'p', ...]")
    axes = gx.pl.method_comparison(scores.fillna(0.2), metrics="spearman", show=False)
    assert len(axes) == 1
    plt.close("all")


def test_reconstruction_draws_cells_without_a_value_in_grey(stitched):
    """A categorical or numeric colour with missing values: those cells were left out of the picture."""
    a = stitched.copy()
    labels = a.obs["domain"].astype(object).to_numpy(copy=True)
    labels[:50] = np.nan
    a.obs["domain"] = pd.Categorical(labels)
    a.obs["score"] = np.where(np.arange(a.n_obs) < 30, np.nan, np.linspace(0, 1, a.n_obs))
    for color, n_missing in (("domain", 50), ("score", 30)):
        axes = gx.pl.reconstruction(a, color=color, gt_key=None, show=False)
        ax = axes[0] if isinstance(axes, list) else axes
        assert sum(len(c.get_offsets()) for c in ax.collections) == a.n_obs
        grey = [c for c in ax.collections if c.get_label() == "NA"]
        assert len(grey) == 1
        assert len(grey[0].get_offsets()) == n_missing
        plt.close("all")
    axes = gx.pl.reconstruction(a, color="domain", gt_key=None, show=False)
    ax = axes[0] if isinstance(axes, list) else axes
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["NA", "left", "right"]
    plt.close("all")


@pytest.mark.parametrize("dtype", ["category", "object", "string", "str", "bool", "boolean"])
def test_reconstruction_draws_text_and_boolean_colours_as_categories(stitched, dtype):
    """Text of any dtype and booleans get a legend, as in scanpy; pandas' text dtypes raised.

    ``'str'`` is the dtype pandas 3 gives every text column (pandas 2.3 with ``future.infer_string``).
    """
    a = stitched.copy()
    left = a.obsm["spatial_gt"][:, 0] < 0.5
    if dtype in ("bool", "boolean"):
        values, on_left, elsewhere = pd.Series(left, index=a.obs_names).astype(dtype), "True", "False"
    else:
        values, on_left, elsewhere = pd.Series(np.where(left, "l", "r"), index=a.obs_names).astype(dtype), "l", "r"
    if dtype == "boolean":
        values.iloc[:20] = pd.NA
    a.obs["group"] = values
    ax = gx.pl.reconstruction(a, color="group", gt_key=None, show=False)
    drawn = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    n_missing = 20 if dtype == "boolean" else 0
    expected = {on_left: int(left[n_missing:].sum()), elsewhere: int((~left[n_missing:]).sum())}
    assert drawn == ({**expected, "NA": n_missing} if n_missing else expected)
    assert ax.get_legend() is not None
    assert all(c.get_array() is None for c in ax.collections)  # no colour bar scale
    plt.close("all")
