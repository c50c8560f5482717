import matplotlib

matplotlib.use("agg")
import warnings

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

import gearsx as gx


@pytest.fixture
def visium_like():
    """A hexagonal grid of spots in full-resolution pixels, a lowres image and Space Ranger scale factors."""
    rows, cols = np.meshgrid(np.arange(20), np.arange(30), indexing="ij")
    x = 1000 + 200 * cols + 100 * (rows % 2)
    y = 800 + 173 * rows
    xy = np.stack([x.ravel(), y.ravel()], 1).astype(float)
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(len(xy))]))
    adata.obsm["spatial"] = xy
    adata.obs["layer"] = pd.Categorical(np.where(xy[:, 0] < 3500, "L1", "L2"))
    adata.obs["gears_domain"] = pd.Categorical(np.where(xy[:, 1] < 2400, "0", "1"))
    img = np.zeros((400, 500, 3), dtype=np.uint8)
    img[:, :, 0] = 255
    adata.uns["spatial"] = {
        "lib": {
            "images": {"lowres": img},
            "scalefactors": {"tissue_lowres_scalef": 0.05, "spot_diameter_fullres": 110.0},
        }
    }
    adata.uns["layer_colors"] = ["#0000ff", "#00ff00"]
    return adata


def test_domains_over_image_scaled_and_coloured(visium_like):
    axes = gx.pl.domains(visium_like, color=["layer", "gears_domain"], show=False)
    assert len(axes) == 2
    for ax in axes:
        (im,) = ax.get_images()
        assert im.get_array().shape == (400, 500, 3)
        (coll,) = ax.collections
        # spot centres are full-resolution coordinates x the lowres scale factor
        assert np.allclose(coll.get_offsets(), visium_like.obsm["spatial"] * 0.05)
        assert ax.yaxis_inverted()
    # colours follow uns['layer_colors'] (scanpy convention)
    face = axes[0].collections[0].get_facecolors()
    left = visium_like.obs["layer"].to_numpy() == "L1"
    assert np.allclose(face[left][:, :3], to_rgba("#0000ff")[:3])
    assert np.allclose(face[~left][:, :3], to_rgba("#00ff00")[:3])
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["0", "1"]
    plt.close("all")


def test_domains_without_image_and_errors(visium_like):
    ax = gx.pl.domains(visium_like, color="layer", img=False, show=False)
    assert not ax.get_images()
    assert np.allclose(ax.collections[0].get_offsets(), visium_like.obsm["spatial"])
    del visium_like.uns["spatial"]
    with pytest.raises(KeyError, match="no tissue image"):
        gx.pl.domains(visium_like, color="layer", img=True, show=False)
    with pytest.raises(KeyError, match="cluster_domains"):
        gx.pl.domains(visium_like, color="gears_domain_x", show=False)
    plt.close("all")


def test_tissue_coordinates_point_down_as_scanpy_draws_them_and_an_embedding_up(visium_like):
    """Without an image the slide is drawn as ``sc.pl.spatial`` draws it: y down, not mirrored against it.

    It used to point up without the image, so the same slide showed upside down against scanpy's and
    squidpy's drawings of it (and against its own drawing over the image).
    """
    import scanpy as sc

    over_image = gx.pl.domains(visium_like, color="layer", show=False)
    assert over_image.yaxis_inverted()
    without = gx.pl.domains(visium_like, color="layer", img=False, show=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scanpy 1.11 points to squidpy's spatial_scatter
        scanpy_ax = sc.pl.spatial(visium_like, color="layer", img_key=None, spot_size=110.0, show=False)[0]
    assert scanpy_ax.yaxis_inverted()
    assert without.yaxis_inverted()
    visium_like.obsm["X_umap"] = visium_like.obsm["spatial"] / 100.0  # another basis: an embedding, y up
    assert not gx.pl.domains(visium_like, color="layer", basis="X_umap", show=False).yaxis_inverted()
    plt.close("all")


def test_domains_of_several_slides_draw_the_library_slide_only(visium_like):
    """Two slides in one AnnData share the pixel frame: over library "A"'s image only slide A is drawn.

    All 1,200 spots used to be drawn over the one image. An image named after no slide is an error
    naming the slide column; without an image ``library_id`` still picks the slide.
    """
    two = ad.concat([visium_like, visium_like], label="library_id", keys=["A", "B"], index_unique="-")
    two.obsm["spatial"] = np.vstack([visium_like.obsm["spatial"]] * 2)
    two.obs["gears_domain"] = pd.Categorical(np.r_[np.zeros(600, int), np.ones(600, int)].astype(str))
    image = visium_like.uns["spatial"]["lib"]
    two.uns["spatial"] = {"A": image, "B": image}
    for lib, domain in (("A", "0"), ("B", "1")):
        ax = gx.pl.domains(two, library_id=lib, show=False)
        assert len(ax.collections[0].get_offsets()) == 600
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1"]  # the categories, drawn or not
        colours = ax.collections[0].get_facecolors()[:, :3]
        expected = to_rgba(ax.get_legend().legend_handles[int(domain)].get_facecolor())[:3]
        assert np.allclose(colours, expected)
    two.uns["spatial"] = {"lib": image}
    with pytest.raises(ValueError, match=r"obs\['library_id'\]"):
        gx.pl.domains(two, show=False)
    ax = gx.pl.domains(two, library_id="B", img=False, show=False)
    assert len(ax.collections[0].get_offsets()) == 600
    two.obs = two.obs.rename(columns={"library_id": "sample_id"})  # another usual name, its values the libraries'
    two.uns["spatial"] = {"A": image, "B": image}
    assert len(gx.pl.domains(two, library_id="A", show=False).collections[0].get_offsets()) == 600
    plt.close("all")


def test_domains_of_overlapping_slides_without_an_image_ask_for_one(visium_like):
    """Slides in one frame drawn together cover each other: without an image too, name the slide.

    Two slides sharing their coordinates (the recorded slide column tells them apart) used to be
    drawn over each other without a word, half the spots hidden under the other slide's.
    """
    del visium_like.uns["spatial"]
    two = ad.concat([visium_like, visium_like], label="slide", keys=["A", "B"], index_unique="-")
    two.obsm["spatial"] = np.vstack([visium_like.obsm["spatial"]] * 2)
    two.uns["gears_prepare"] = {"params": {"slide_key": "slide"}}
    with pytest.raises(ValueError, match=r"2 slides \(obs\['slide'\]\) whose coordinates overlap.*library_id="):
        gx.pl.domains(two, color="layer", show=False)
    with pytest.raises(ValueError, match="`library_id`='C' names none of them"):
        gx.pl.domains(two, color="layer", library_id="C", show=False)
    ax = gx.pl.domains(two, color="layer", library_id="B", show=False)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), visium_like.obsm["spatial"])
    tiled = two.copy()  # the same slides laid side by side in the frame: nothing hidden, both drawn
    tiled.obsm["spatial"][600:, 0] += 10_000
    assert len(gx.pl.domains(tiled, color="layer", show=False).collections[0].get_offsets()) == 1200
    two.obsm["X_umap"] = two.obsm["spatial"].copy()  # another basis: the slides mix by design, all drawn
    assert len(gx.pl.domains(two, color="layer", basis="X_umap", show=False).collections[0].get_offsets()) == 1200
    plt.close("all")


def test_domains_on_another_basis_leave_the_image_out(visium_like):
    """The image's scale factors place ``obsm['spatial']`` on it; a layout in other units is drawn without it."""
    visium_like.obsm["X_layout"] = (visium_like.obsm["spatial"] - 1000.0) / 200.0
    ax = gx.pl.domains(visium_like, color="layer", basis="X_layout", show=False)
    assert not ax.get_images()
    np.testing.assert_allclose(ax.collections[0].get_offsets(), visium_like.obsm["X_layout"])
    # the spots' size from the layout (nearest neighbours 1 apart), not the 110-pixel Visium diameter
    spots = ax.collections[0]
    if hasattr(spots, "get_widths"):  # matplotlib >= 3.9; the oldest supported release cannot read them back
        np.testing.assert_allclose(spots.get_widths(), 1.0, rtol=0.01)
    with pytest.raises(ValueError, match="basis='spatial'"):
        gx.pl.domains(visium_like, color="layer", basis="X_layout", img=True, show=False)
    plt.close("all")


def test_domains_color_argument_and_old_key_name(visium_like):
    axes = gx.pl.domains(visium_like, color=["layer", "gears_domain"], img=False, show=False)
    assert [a.get_title() for a in axes] == ["layer", "gears_domain"]
    with pytest.warns(FutureWarning, match="renamed `color`"):
        ax = gx.pl.domains(visium_like, key="layer", img=False, show=False)
    assert ax.get_title() == "layer"
    plt.close("all")


def test_domains_draw_missing_labels_grey_and_keep_the_category_order(visium_like):
    """NaN and 'NA' labels took a palette colour (legend 'NA' in green); scanpy's colours follow the category order."""
    a = visium_like.copy()
    labels = np.where(a.obsm["spatial"][:, 0] < 2500, "10", "2").astype(object)
    labels[:5] = np.nan
    labels[5:9] = "NA"  # as unlabelled DLPFC spots are written
    a.obs["truth"] = pd.Categorical(labels, categories=["2", "10", "NA"])  # not the lexicographic order
    a.uns["truth_colors"] = ["#0000ff", "#00ff00", "#ff0000"]
    ax = gx.pl.domains(a, color="truth", img=False, show=False)
    face = ax.collections[0].get_facecolors()[:, :3]
    assert np.allclose(face[:9], gx.pl._reconstruction.NA_COLOR)
    two = np.asarray(labels == "2", dtype=bool)
    assert np.allclose(face[two], to_rgba("#0000ff")[:3])  # '2' is the first category: the first stored colour
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["2", "10", "NA"]
    plt.close("all")


def test_domains_palette_gives_every_category_a_colour(visium_like):
    with pytest.raises(ValueError, match=r"`palette` has no colour for \['L2'\] of `layer`"):  # was drawn as NA grey
        gx.pl.domains(visium_like, color="layer", img=False, palette={"L1": "red"}, show=False)
    with pytest.warns(UserWarning, match="2 categories and the palette 1 colours"):  # both domains one colour
        gx.pl.domains(visium_like, color="gears_domain", img=False, palette=["red"], show=False)
    # a colour map's name (its letters were taken for colours: "Invalid RGBA argument: 'S'")
    ax = gx.pl.domains(visium_like, color="gears_domain", img=False, palette="Set2", show=False)
    face = ax.collections[0].get_facecolors()[:, :3]
    first = visium_like.obs["gears_domain"].to_numpy() == "0"
    assert np.allclose(face[first], plt.get_cmap("Set2").colors[0])
    assert np.allclose(face[~first], plt.get_cmap("Set2").colors[1])
    plt.close("all")


def test_domains_default_palette_keeps_30_domains_apart(visium_like):
    """Above 20 categories tab20 was cycled (two domains one colour); scanpy's 102 colours, as scanpy does."""
    a = visium_like.copy()
    a.obs["fine"] = pd.Categorical((np.arange(a.n_obs) % 30).astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "some categories share a colour"
        ax = gx.pl.domains(a, color="fine", img=False, show=False)
    face = ax.collections[0].get_facecolors()[:, :3]
    assert len({tuple(np.round(f, 4)) for f in face}) == 30
    ax.figure.canvas.draw()  # scanpy's rule: two columns for 15-30 entries, not one column running off the page
    columns = {round(t.get_window_extent().x0) for t in ax.get_legend().get_texts()}
    assert len(columns) == 2
    plt.close("all")
