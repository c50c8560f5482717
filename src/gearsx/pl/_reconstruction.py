"""Plots of reconstructed layouts: side by side with the truth, distortion heatmap, stitching diagnostics."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from gearsx._anndata import check_distinct_positions, obsm_coords
from gearsx._keys import Key
from gearsx._utils import check_positive_int, check_positive_number, checks_flags

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

__all__ = ["distortion_heatmap", "reconstruction", "stitching_diagnostics"]

logger = logging.getLogger(__name__)


def _finish(fig, axes, *, show: bool | None, save: str | None):
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show is None:
        show = plt.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template")
    if show:
        plt.show()
        return None
    return axes


def y_down(ax) -> None:
    """Point ``ax``'s y axis down, as scanpy and squidpy draw tissue coordinates (image rows), image or not."""
    if not ax.yaxis_inverted():
        ax.invert_yaxis()


def _axes(ax, n: int, *, figsize: tuple[float, float]):
    """``(figure, list of n axes)``: new ones when ``ax`` is ``None``, else the ``n`` axes given."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axs = plt.subplots(1, n, figsize=figsize, constrained_layout=True, squeeze=False)
        return fig, list(axs[0])
    axs = [ax] if not isinstance(ax, list | tuple | np.ndarray) else list(np.ravel(ax))
    if len(axs) != n:
        msg = f"`ax` must hold {n} axes for this plot ({n} panels); got {len(axs)}."
        raise ValueError(msg)
    return axs[0].figure, axs


def _category_colors(adata: AnnData, key: str, cats: list, palette) -> list:
    """Colours of ``cats``: ``palette``, else ``uns[f'{key}_colors']`` (scanpy's convention), else tab10/tab20/scanpy's 102."""
    import matplotlib.pyplot as plt

    stored = adata.uns.get(Key.colors(key))
    if palette is None and stored is not None and len(stored) >= len(cats):
        return list(stored)
    if palette is None:  # tab10, tab20, then scanpy's choice above 20 categories: its 102 distinct colours
        from scanpy.plotting.palettes import default_102

        palette = default_102 if len(cats) > 20 else plt.get_cmap("tab10" if len(cats) <= 10 else "tab20").colors
    if isinstance(palette, str):  # a colour map's name, as scanpy takes it (its letters are not colours)
        cmap = plt.get_cmap(palette)
        listed = getattr(cmap, "colors", None)
        palette = list(listed) if listed is not None and len(listed) < 256 else cmap(np.linspace(0, 1, len(cats)))
    if isinstance(palette, dict):
        missing = [c for c in cats if c not in palette and str(c) not in palette]
        if missing:  # drawn grey, they looked like observations without a value
            msg = f"`palette` has no colour for {missing} of `{key}`; give every category a colour."
            raise ValueError(msg)
        return [palette.get(c, palette.get(str(c))) for c in cats]
    palette = list(palette)
    if len(palette) < len(cats):
        warnings.warn(
            f"`{key}` has {len(cats)} categories and the palette {len(palette)} colours; some categories share "
            "a colour (pass a `palette` with one colour per category).",
            UserWarning,
            stacklevel=3,
        )
    return [palette[i % len(palette)] for i in range(len(cats))]


#: Colour of observations without a value, in every gearsx plot (scanpy's ``na_color`` is as light a grey).
NA_COLOR = (0.8, 0.8, 0.8)


def _aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` moved onto ``gt`` by the best similarity transform (Procrustes with scale, reflections allowed)."""
    from gearsx.geometry import procrustes

    p, g = pred - pred.mean(0), gt - gt.mean(0)
    r = procrustes(p, g)
    pr = p @ r
    s = float((pr * g).sum() / max((pr**2).sum(), 1e-300))
    return s * pr + gt.mean(0)


def _is_categorical(values) -> bool:
    """Whether a colour's values are drawn as categories (legend) rather than on a colour bar.

    As in scanpy: categoricals and text of any dtype (``object``, pandas' ``'string'``, and the ``str``
    dtype that pandas 3 gives text columns by default) are categories, and so are booleans, which
    :func:`_scatter` turns into the text ``'False'`` / ``'True'`` first; numbers are a colour bar.
    """
    import pandas as pd

    return isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values.dtype)


def _scatter(ax, xy, adata, color, size, palette, cmap):
    import pandas as pd

    size = size if size is not None else max(0.5, min(20.0, 12000 / max(len(xy), 1)))
    if color is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c="0.3", linewidths=0, rasterized=len(xy) > 5000)
        return
    if color in adata.obs:
        values = adata.obs[color]
    else:  # a gene's column of X, read by scanpy (anndata 0.13 deprecates obs_vector)
        import scanpy as sc

        values = sc.get.obs_df(adata, keys=[color])[color]
    missing = np.asarray(values.isna())
    if missing.any():  # drawn in grey, as scanpy's na_color, not left out of the picture
        ax.scatter(
            xy[missing, 0], xy[missing, 1], s=size, color=NA_COLOR, label="NA", linewidths=0, rasterized=len(xy) > 5000
        )
    if pd.api.types.is_bool_dtype(values):  # categories 'False' / 'True', as in scanpy; missing values stay missing
        values = values.map({False: "False", True: "True"})
    if _is_categorical(values):
        cats = pd.Categorical(values)
        colors = _category_colors(adata, color, list(cats.categories), palette)
        for i, cat in enumerate(cats.categories):
            sel = np.asarray(cats == cat)
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=size,
                color=colors[i],
                label=str(cat),
                linewidths=0,
                rasterized=len(xy) > 5000,
            )
    else:
        sc_ = ax.scatter(
            xy[~missing, 0],
            xy[~missing, 1],
            s=size,
            c=np.asarray(values, dtype=float)[~missing],
            cmap=cmap,
            linewidths=0,
            rasterized=len(xy) > 5000,
        )
        ax.figure.colorbar(sc_, ax=ax, shrink=0.7, label=color)


@checks_flags
def reconstruction(
    adata: AnnData,
    *,
    color: str | Sequence[str] | None = None,
    basis: str = Key.reconstruction,
    gt_key: str | None = Key.spatial_gt,
    size: float | None = None,
    palette: str | Sequence[str] | Mapping[str, str] | None = None,
    cmap: str = "viridis",
    legend: bool = True,
    reference: AnnData | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | None = None,
):
    """Scatter plot of a reconstructed layout, beside the ground truth when ``adata`` holds it.

    The reconstruction is defined up to rotation, reflection, translation and scale;
    when the truth is shown, it is aligned to it by Procrustes (with scale) for display.

    Parameters
    ----------
    adata
        Cells with ``obsm[basis]``.
    color
        An ``obs`` column (categorical, text or boolean: legend; numeric: colour bar) or a gene
        name; a list of them draws one row of panels per key (as scanpy's ``color=[...]``).
    basis
        ``obsm`` key of the reconstruction.
    gt_key
        ``obsm`` key of the true positions; ``None``, or the default key absent: the reconstruction
        alone. Another key must be in ``obsm``.
    size, palette, cmap
        Marker size (positive; default from the number of cells), categorical colours (a colour map's name, a
        sequence, reused with a warning when shorter than the categories, or a dict with a colour for
        every category; default ``uns[f'{color}_colors']`` as in scanpy, else tab10, tab20 or, above 20
        categories, scanpy's 102 colours), colour map.
    legend
        Draw the legend of a categorical ``color``.
    reference
        The ST data of the model: a reference-anchored reconstruction lives in the frame of one of
        its slides, and is drawn over that slide's spots (and its tissue image, when
        ``uns['spatial']`` holds one keyed by the slide's name, or the only one of a one-slide
        reference; otherwise a warning says the image was left out), without any alignment. The
        slide is read from the record of the run that wrote ``basis`` (``uns[key]['anchor']`` for
        ``'X_<key>_spatial'``, the layout, or ``'X_<key>_anchor'``, its anchors). The spots come from the ``obsm`` key the model was trained on
        (``uns[key]['anchor']['spatial_key']``); when that is not ``'spatial'``, the frame of the
        image's scale factors, the drawing is carried onto the image by the exact affine map between
        the two keys (microns and pixels of the same spots), or drawn without the image, with a
        warning, when there is none. The y axis points down, with or without the image, as
        :func:`scanpy.pl.spatial` and :func:`gearsx.pl.domains` draw the slide; without
        ``reference`` a layout is drawn as an embedding, y up. An intrinsic reconstruction has no
        such frame and raises, as does a ``reference`` without that slide or that key.
    ax
        Axes to draw into: one, or two (truth, reconstruction) when the ground truth is shown; one
        ``color`` only (a list of colours makes its own figure).
    show
        Show the figure (default: unless a non-interactive backend is in use); otherwise return the axes.
    save
        File to write the figure to.

    Returns
    -------
    The axes (a ``list`` of two with the ground truth; for a list of colours, a ``list`` with that
    per colour), unless shown.

    Examples
    --------
    >>> gx.pl.reconstruction(sc_adata, color="cell_type")  # doctest: +SKIP
    >>> gx.pl.reconstruction(sc_adata, color=["cell_type", "gears_uncertainty"])  # doctest: +SKIP
    """
    pred = obsm_coords(adata, basis, "the reconstruction; run gx.tl.reconstruct")
    if gt_key is not None and gt_key != Key.spatial_gt and gt_key not in adata.obsm:
        msg = f"`gt_key`={gt_key!r} is not in `adata.obsm`; available: {list(adata.obsm.keys())}. Pass gt_key=None for the reconstruction alone."
        raise KeyError(msg)
    if size is not None:
        size = check_positive_number(size, name="size", hint=" or None (from the number of cells)")
    has_gt = gt_key is not None and gt_key in adata.obsm
    keys = [color] if color is None or isinstance(color, str) else list(color)
    _check_colors(adata, keys)
    if len(keys) > 1:
        if ax is not None:
            msg = "`ax` takes the panels of one `color`; with a list of colours leave ax=None (one row per colour)."
            raise ValueError(msg)
        kwargs = {"basis": basis, "gt_key": gt_key, "size": size, "palette": palette, "cmap": cmap, "legend": legend}
        panels = 1 if reference is not None or not has_gt else 2
        return _rows(adata, keys, panels, show=show, save=save, kwargs={**kwargs, "reference": reference})
    color = keys[0]
    if reference is not None:
        fig, (axes,) = _axes(ax, 1, figsize=(5.4, 4.8))
        to_drawing, slide = _draw_reference(axes, adata, reference, basis)
        _scatter(axes, to_drawing(pred), adata, color, size, palette, cmap)
        axes.set_title(f"{basis} over reference slide {slide!r}")
        axes.set_aspect("equal")
        y_down(axes)  # the slide's frame
        axes.set_xticks([])
        axes.set_yticks([])
        if legend and color is not None and axes.get_legend_handles_labels()[1]:
            _category_legend(axes)
        return _finish(fig, axes, show=show, save=save)
    if has_gt:
        gt = obsm_coords(adata, gt_key, "the ground truth")
        fig, axes = _axes(ax, 2, figsize=(10, 4.6))
        panels = [(axes[0], gt, "ground truth"), (axes[1], _aligned(pred, gt), f"{basis} (aligned)")]
    else:
        fig, (axes,) = _axes(ax, 1, figsize=(5, 4.6))
        panels = [(axes, pred, basis)]
    for a, xy, title in panels:
        _scatter(a, xy, adata, color, size, palette, cmap)
        a.set_title(title if color is None else f"{title}: {color}")
        a.set_aspect("equal")
        a.set_xticks([])
        a.set_yticks([])
    if legend and color is not None and panels[-1][0].get_legend_handles_labels()[1]:
        _category_legend(panels[-1][0])
    return _finish(fig, list(axes) if has_gt else axes, show=show, save=save)


def _check_colors(adata: AnnData, keys: list) -> None:
    """Raise before drawing when ``keys`` is empty or names neither an ``obs`` column nor a gene."""
    if not keys:
        msg = "`color` is an empty list; pass an obs column or gene name, a list of them, or None."
        raise ValueError(msg)
    for key in keys:
        if key is not None and key not in adata.obs and key not in adata.var_names:
            msg = f"`color`={key!r} is neither a column of `adata.obs` nor a gene in `adata.var_names`."
            raise KeyError(msg)


def _rows(adata: AnnData, keys: list, panels: int, *, show, save, kwargs: dict):
    """One row of :func:`reconstruction`'s ``panels`` panels per colour key, in one figure."""
    import matplotlib.pyplot as plt

    width, height = (10.0, 4.6) if panels == 2 else (5.4, 4.8)
    fig, grid = plt.subplots(
        len(keys), panels, figsize=(width, height * len(keys)), constrained_layout=True, squeeze=False
    )
    out = [
        reconstruction(adata, color=key, ax=list(row) if panels == 2 else row[0], show=False, **kwargs)
        for key, row in zip(keys, grid, strict=True)
    ]
    return _finish(fig, out, show=show, save=save)


def legend_columns(n_entries: int) -> int:
    """Columns of a categorical legend: scanpy's rule (one up to 14 entries, two up to 30, then three)."""
    return 1 if n_entries <= 14 else 2 if n_entries <= 30 else 3


def _category_legend(ax) -> None:
    """Place the categories' legend right of ``ax``, with markers of one size whatever the points' size."""
    n = len(ax.get_legend_handles_labels()[1])
    leg = ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8, ncol=legend_columns(n))
    for handle in leg.legend_handles:
        handle.set_sizes([30.0])


def _image_frame_map(reference: AnnData, frame: str, sel: np.ndarray):
    """Return the affine map from ``obsm[frame]`` onto ``obsm['spatial']`` (the image's scale factors' frame), or ``None``.

    Fitted by least squares on the anchored slide's spots, and kept only when it is exact up to a
    thousandth of the slide's extent (microns and pixels of the same spots are; another layout is not).
    """
    if Key.spatial not in reference.obsm:
        return None
    src = obsm_coords(reference, frame, "the reference spots")[sel]
    dst = obsm_coords(reference, Key.spatial, "the reference spots")[sel]
    design = np.column_stack([src, np.ones(len(src))])
    coef = np.linalg.lstsq(design, dst, rcond=None)[0]
    rms = float(np.sqrt(((design @ coef - dst) ** 2).sum(1).mean()))
    if rms > 1e-3 * float(np.ptp(dst, axis=0).max()):
        return None
    return lambda xy: np.column_stack([xy, np.ones(len(xy))]) @ coef


def _anchor_record(adata: AnnData, basis: str) -> dict:
    """Return the anchoring record of the run that wrote ``obsm[basis]`` (``uns[key]['anchor']`` for ``X_<key>_spatial``).

    A layout in the reference's frame is the fused layout or the anchors of a reference-anchored run
    (``X_<key>_spatial``, ``X_<key>_anchor``); each run keeps its record under its own ``key_added``,
    so the record is read from the basis's name, never from another run's.
    """
    import re

    match = re.fullmatch(r"X_(.+)_(spatial|anchor)", basis)
    if match is None:
        msg = (
            f"`reference=` draws a layout in the reference's frame, written by gx.tl.reconstruct: "
            f"`basis`={basis!r} is not one (pass 'X_<key_added>_spatial' or 'X_<key_added>_anchor')."
        )
        raise ValueError(msg)
    key = match.group(1)
    anchor = adata.uns.get(key, {}).get("anchor", {}) if isinstance(adata.uns.get(key), dict) else {}
    if anchor.get("mode") != "reference":
        msg = (
            f"`reference=` draws a reference-anchored reconstruction over its slide, but the run that wrote "
            f"obsm[{basis!r}] is intrinsic or unrecorded (uns[{key!r}]['anchor']['mode'] is not 'reference'); "
            "it has no reference frame."
        )
        raise ValueError(msg)
    return anchor


def _draw_reference(ax, adata: AnnData, reference: AnnData, basis: str):
    """Draw the anchored slide's spots (and image); return the map of the anchored frame onto the drawing, and the slide.

    The anchored coordinates are in the frame the model was trained in (``uns['gears']['anchor']['spatial_key']``;
    ``'spatial'`` for results of versions that did not record it). The image's scale factors place
    ``obsm['spatial']`` on it, so another frame is mapped there first (see :func:`_image_frame_map`).
    """
    from gearsx._anndata import anchored_slide_rows

    from ._domains import _image

    anchor = _anchor_record(adata, basis)
    frame = str(anchor.get("spatial_key", Key.spatial))
    if frame not in reference.obsm:
        msg = (
            f"The reconstruction's coordinates are in the frame of `obsm[{frame!r}]`, the key the model was "
            f"trained on, which `reference` does not hold (its obsm: {list(reference.obsm.keys())}); pass the "
            "ST data the model was trained on."
        )
        raise KeyError(msg)
    xy = obsm_coords(reference, frame, "the reference spots")
    slide_key, rows = anchored_slide_rows(reference, anchor, "reference")
    sel = np.zeros(reference.n_obs, dtype=bool)
    sel[rows] = True
    onto_image = None  # with an image drawn: the anchored frame -> the image's pixels
    spatial = reference.uns.get("spatial")
    if isinstance(spatial, dict) and spatial:
        slide = str(anchor["slide"])
        one_slide = len(rows) == reference.n_obs
        # a single image is the anchored slide's only when the reference holds no other slide
        lib = slide if slide in spatial else (next(iter(spatial)) if len(spatial) == 1 and one_slide else None)
        if lib is None:
            logger.warning(
                "`reference.uns['spatial']` holds no image keyed by the anchored slide %r (libraries: %s), and "
                "the reference holds several slides: drawn over the slide's spots without an image. Key the "
                "slide's image by its name in obs[%r] to draw it.",
                slide, sorted(spatial)[:10], slide_key,
            )  # fmt: skip
        found = _image(reference, lib, None) if lib is not None else None
        if found is not None:
            image, scale, _ = found
            onto_spatial = _identity if frame == Key.spatial else _image_frame_map(reference, frame, sel)
            if onto_spatial is None:
                logger.warning(
                    "The reconstruction is in the frame of obsm[%r] (the model's coordinates), which no affine "
                    "map carries onto obsm['spatial'], the frame of the image's scale factors: drawn over the "
                    "slide's spots without the image.",
                    frame,
                )
            else:
                ax.imshow(image, zorder=0)  # rows grow downwards
                onto_image = _then_scaled(onto_spatial, scale)
    to_drawing = _identity if onto_image is None else onto_image
    spots = to_drawing(xy[sel])
    ax.scatter(spots[:, 0], spots[:, 1], s=6, c="0.85", linewidths=0, zorder=0.5, label="_reference")
    return to_drawing, str(anchor["slide"])


def _identity(points: np.ndarray) -> np.ndarray:
    return points


def _then_scaled(onto, scale: float):
    """``onto`` followed by multiplication with ``scale`` (an image's scale factor)."""
    return lambda points: onto(points) * scale


@checks_flags
def distortion_heatmap(
    adata: AnnData,
    *,
    pred_key: str = Key.reconstruction,
    gt_key: str = Key.spatial_gt,
    n_blocks: int = 64,
    vmax: float | None = None,
    cmap: str = "magma",
    random_state: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | None = None,
):
    """Heatmap of ``|log((D_hat + e) / (D + e))|`` between blocks of cells in Morton order of the truth.

    Computed by :func:`gearsx.metrics.distortion_matrix` (optimal global scale, sampled
    pairs per block; never an ``N x N`` image). Dark is faithful; a bright row/column
    band marks a region placed wrongly relative to the rest, a bright diagonal block a
    region distorted internally.

    Parameters
    ----------
    adata
        Cells with the reconstruction and the truth in ``obsm``.
    pred_key, gt_key
        ``obsm`` keys of the reconstruction and the true positions.
    n_blocks
        Blocks along the Morton order.
    vmax
        Upper end of the colour scale, a positive number (default: 99th percentile; the scale starts at 0).
    cmap
        Colour map.
    random_state
        Seed of the within-block samples.
    ax, show, save
        As in :func:`reconstruction`.

    Examples
    --------
    >>> gx.pl.distortion_heatmap(sc_adata)  # doctest: +SKIP
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    from gearsx.metrics import distortion_matrix

    if vmax is not None:
        vmax = check_positive_number(vmax, name="vmax", hint=" or None (the 99th percentile)")
    pred = obsm_coords(adata, pred_key, "the reconstruction; run gx.tl.reconstruct")
    gt = obsm_coords(adata, gt_key, "the ground truth")
    check_distinct_positions(gt, None, spatial_key=gt_key, slide_key=None, items="cells", purpose="score against")
    m, _ = distortion_matrix(pred, gt, n_blocks=n_blocks, random_state=random_state)
    _, (ax,) = _axes(ax, 1, figsize=(5.2, 4.4))
    im = ax.imshow(m, cmap=cmap, vmin=0, vmax=vmax if vmax is not None else float(np.nanpercentile(m, 99)))
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label="|log distance ratio|")
    ax.set_xlabel("cell blocks (Morton order of truth)")
    ax.set_ylabel("cell blocks")
    ax.set_title(f"distance distortion (mean {np.nanmean(m):.3f})")
    return _finish(ax.figure, ax, show=show, save=save)


@checks_flags
def stitching_diagnostics(
    adata: AnnData,
    *,
    key: str = Key.result,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | None = None,
):
    """Three panels on the stitching: patch reliability, patch disagreement, and edge residuals.

    Edge residuals are ``|log(d_layout / d_stitched)|`` on the stitched edges
    (``obsp[f'{key}_distances']``) against the final layout.

    Parameters
    ----------
    adata
        Data written by :func:`gearsx.tl.reconstruct` or :func:`gearsx.tl.stitch`.
    key
        ``key_added`` of that call.
    ax
        Three axes to draw into (default: a new figure).
    show, save
        As in :func:`reconstruction`.

    Returns
    -------
    A ``list`` of the three axes, unless shown.

    Examples
    --------
    >>> gx.pl.stitching_diagnostics(sc_adata)  # doctest: +SKIP
    """
    import scipy.sparse as sp

    if key not in adata.uns or "diagnostics" not in adata.uns[key]:
        msg = f"`adata.uns[{key!r}]['diagnostics']` is missing; run gx.tl.reconstruct or gx.tl.stitch first."
        if adata.uns.get(key, {}).get("anchor", {}).get("weight") == 0:  # anchored, no intrinsic layout
            msg = (
                f"`adata.uns[{key!r}]` is an anchored run with anchor_weight=0, which stitches no patches; "
                "rerun gx.tl.reconstruct with anchor_weight > 0 (the default 0.1) to see the stitching."
            )
        raise KeyError(msg)
    diag = adata.uns[key]["diagnostics"]
    x = obsm_coords(adata, Key.layout(key), "the layout")
    d = sp.triu(adata.obsp[Key.distances(key)], k=1).tocoo()
    resid = np.abs(np.log(np.maximum(np.linalg.norm(x[d.row] - x[d.col], axis=1), 1e-12) / np.maximum(d.data, 1e-12)))
    rel = np.asarray(diag["patch_reliability"], dtype=float)
    dis = np.asarray(diag["patch_disagreement"], dtype=float)
    fig, axes = _axes(ax, 3, figsize=(12, 3.4))
    axes[0].hist(rel, bins=30, color="tab:blue")
    axes[0].set_xlabel("patch reliability")
    axes[0].set_ylabel("patches")
    axes[0].set_title(f"{len(rel)} patches")
    axes[1].hist(dis[dis >= 0], bins=30, color="tab:orange")
    axes[1].axvline(float(diag["overlap_disagreement"]), color="k", ls="--", lw=1, label="median")
    axes[1].set_xlabel("overlap disagreement (mean |log d ratio|)")
    axes[1].legend(frameon=False)
    axes[2].hist(resid, bins=50, color="tab:green")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("edge residual |log(d_layout / d_stitched)|")
    axes[2].set_title(f"{len(resid)} edges, stress {float(diag['solver_stress']):.3f}")
    return _finish(fig, list(axes), show=show, save=save)
