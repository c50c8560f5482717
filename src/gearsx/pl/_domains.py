"""Spatial-domain maps over the tissue image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gearsx._anndata import check_obs_key, obsm_coords
from gearsx._keys import Key
from gearsx._utils import check_fraction, check_positive_number, checks_flags, renamed_arguments

from ._reconstruction import NA_COLOR, _axes, _category_colors, _finish, legend_columns, y_down

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

__all__ = ["domains"]


def _image(adata: AnnData, library_id: str | None, img_key: str | None):
    """``(image, scale factor, library_id)`` from ``uns['spatial']`` (scanpy/squidpy layout), or ``None``."""
    lib = adata.uns.get("spatial")
    if not isinstance(lib, dict) or not lib:
        return None
    if library_id is None:
        if len(lib) > 1:
            msg = f"`adata.uns['spatial']` holds several libraries {list(lib)}; pass `library_id`."
            raise ValueError(msg)
        library_id = next(iter(lib))
    if library_id not in lib:
        msg = f"`library_id={library_id!r}` is not in `adata.uns['spatial']`; available: {list(lib)}."
        raise KeyError(msg)
    images = lib[library_id].get("images", {})
    if img_key is not None and img_key not in images:  # asked for by name: drawing none would hide it
        msg = f"`img_key={img_key!r}` is not an image of library {library_id!r}; available: {list(images)}."
        raise KeyError(msg)
    if img_key is None:
        img_key = "hires" if "hires" in images else "lowres" if "lowres" in images else None
    if img_key is None:
        return None
    sf = lib[library_id].get("scalefactors", {}).get(f"tissue_{img_key}_scalef")
    if sf is None:
        msg = (
            f"`uns['spatial'][{library_id!r}]['scalefactors']` lacks 'tissue_{img_key}_scalef'; "
            "full-resolution coordinates cannot be placed on the image without it."
        )
        raise KeyError(msg)
    return np.asarray(images[img_key]), float(sf), library_id


@renamed_arguments(key="color")
@checks_flags
def domains(
    adata: AnnData,
    *,
    color: str | Sequence[str] = "gears_domain",
    basis: str = Key.spatial,
    img: bool | None = None,
    library_id: str | None = None,
    img_key: str | None = None,
    spot_size: float | None = None,
    alpha: float = 0.85,
    palette: str | Sequence[str] | Mapping[str, str] | None = None,
    legend: bool = True,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | None = None,
):
    """Spatial domains as spots over the tissue image; several keys give panels side by side.

    Spots are drawn as circles of their physical size (Visium: ``spot_diameter_fullres``),
    not as markers whose size depends on the figure. The image is taken from
    ``uns['spatial'][library_id]['images']`` (``'hires'`` if present, else ``'lowres'``) and
    the full-resolution coordinates in ``obsm[basis]`` are multiplied by the matching
    ``tissue_<img_key>_scalef``. Colours follow ``uns[f'{color}_colors']`` when present (the
    scanpy convention), else ``palette``.

    Parameters
    ----------
    adata
        Annotated data matrix.
    color
        ``obs`` column(s) with domain labels, e.g. ``['layer', 'gears_domain']`` (scanpy's name;
        the earlier ``key=`` still works, with a warning).
    basis
        ``obsm`` key of the coordinates. The tissue image and the Visium spot size are drawn only
        with ``'spatial'``, the frame of their scale factors. With ``'spatial'`` the y axis points
        down, with or without the image (the image's rows), as :func:`scanpy.pl.spatial` and
        squidpy's ``pl.spatial_scatter`` draw tissue coordinates; on another basis, such as a UMAP,
        it points up, as in :func:`scanpy.pl.embedding`.
    img
        Draw the tissue image: ``None`` when present (and ``basis='spatial'``), ``True`` requires
        it, ``False`` never.
    library_id
        Library in ``uns['spatial']`` (needed when there are several). When ``adata`` holds several
        slides (the slide column recorded by an earlier gearsx step, else a column such as
        ``library_id`` or ``sample_id`` whose values name the libraries), only the spots of the
        slide of that name are drawn; with ``basis='spatial'``, with or without an image, it is
        needed when the slides' coordinates overlap (slides tiled apart in one frame are drawn
        together; on another basis, such as a UMAP, all slides are).
    img_key
        ``'hires'`` or ``'lowres'`` (default: the best available); an image the library does not
        hold is an error.
    spot_size
        Spot diameter in ``obsm[basis]`` units, positive (default: ``spot_diameter_fullres`` or the
        median nearest-neighbour distance).
    alpha
        Spot opacity, in [0, 1].
    palette
        Colours of the categories: a colour map's name (``'Set2'``), a sequence (reused, with a
        warning, when shorter than the categories) or a dict with a colour for every category.
        Default: ``uns[f'{color}_colors']`` as in scanpy, else tab10, tab20 or, above 20
        categories, scanpy's 102 colours. Missing labels (NaN or ``'NA'``) are drawn in light grey.
    legend
        Draw a legend per panel.
    ax
        Axes for one column, or one axes per column.
    show, save
        As in :func:`gearsx.pl.reconstruction`.

    Returns
    -------
    The axes (a ``list`` with several columns), unless shown.

    Examples
    --------
    >>> gx.tl.cluster_domains(adata, method="mclust", n_clusters=7)  # doctest: +SKIP
    >>> gx.pl.domains(adata, color=["layer", "gears_domain"])  # doctest: +SKIP
    """
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Patch
    from scipy.spatial import cKDTree

    keys = [color] if isinstance(color, str) else list(color)
    for k in keys:
        check_obs_key(adata, k, "color", "domains are written by gx.tl.cluster_domains")
    xy = obsm_coords(adata, basis, "spot coordinates")
    alpha = check_fraction(alpha, name="alpha")
    if spot_size is not None:
        spot_size = check_positive_number(spot_size, name="spot_size", hint=" or None (from the data)")
    # the image and its scale factors place obsm['spatial'] (full-resolution pixels) on it, no other layout
    on_pixels = basis == Key.spatial
    if img is True and not on_pixels:
        msg = (
            f"`img=True`, but the tissue image's scale factors place `obsm['spatial']` on it, not "
            f"`obsm[{basis!r}]`; pass basis='spatial' to draw over the image, or img=None."
        )
        raise ValueError(msg)
    found = _image(adata, library_id, img_key) if img is not False and on_pixels else None
    if img is True and found is None:
        msg = "`img=True` but `adata.uns['spatial']` holds no tissue image; pass img=None or img=False."
        raise KeyError(msg)
    # slides overlapping in the tissue frame would cover each other; another basis (a UMAP) mixes them by design
    frame = xy if on_pixels else None
    keep = _library_spots(adata, found[2] if found is not None else library_id, frame, drawing_image=found is not None)
    xy = xy[keep]
    obs = adata.obs.iloc[np.flatnonzero(keep)]
    scale = 1.0
    if found is not None:
        image, scale, lib = found
    if spot_size is None:
        sf = {}
        if on_pixels and isinstance(adata.uns.get("spatial"), dict) and adata.uns["spatial"]:
            lib_any = library_id or next(iter(adata.uns["spatial"]))
            sf = adata.uns["spatial"].get(lib_any, {}).get("scalefactors", {})
        if "spot_diameter_fullres" in sf:
            spot_size = float(sf["spot_diameter_fullres"])
        else:
            d = cKDTree(xy).query(xy, k=2)[0][:, 1] if len(xy) > 1 else np.ones(1)
            spot_size = float(np.median(d)) if np.median(d) > 0 else 1.0
    pos = xy * scale
    diam = spot_size * scale

    fig, axs = _axes(ax, len(keys), figsize=(5.2 * len(keys), 4.8))
    for a, k in zip(axs, keys, strict=True):
        cats, n_missing = _domain_categories(obs[k])
        colors = _category_colors(adata, k, list(cats.categories), palette)
        if found is not None:
            a.imshow(image, zorder=0)
        face = np.array([colors[c] if c >= 0 else NA_COLOR for c in cats.codes], dtype=object)
        coll = EllipseCollection(
            widths=np.full(len(pos), diam),
            heights=np.full(len(pos), diam),
            angles=np.zeros(len(pos)),
            units="xy",
            offsets=pos,
            offset_transform=a.transData,
            facecolors=list(face),
            edgecolors="none",
            alpha=alpha,
            zorder=1,
        )
        a.add_collection(coll)
        pad = diam
        a.set_xlim(pos[:, 0].min() - pad, pos[:, 0].max() + pad)
        a.set_ylim(pos[:, 1].min() - pad, pos[:, 1].max() + pad)
        if on_pixels:
            y_down(a)  # tissue coordinates
        a.set_aspect("equal")
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(k)
        if legend:
            handles = [Patch(color=colors[i], label=str(c)) for i, c in enumerate(cats.categories)]
            handles += [Patch(color=NA_COLOR, label="NA")] if n_missing else []
            a.legend(
                handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8,
                ncol=legend_columns(len(handles)),
            )  # fmt: skip
    return _finish(fig, axs if len(keys) > 1 else axs[0], show=show, save=save)


def _library_spots(adata: AnnData, library: str | None, xy: np.ndarray | None, *, drawing_image: bool) -> np.ndarray:
    """Mask of the spots to draw: all of them, or the slide of ``library`` when ``adata`` holds several slides.

    The slides are told apart as :func:`gearsx._anndata.image_slide_key` finds their column (the
    recorded slide column, else one whose values name the libraries). Slides share one
    coordinate frame, so drawing them all over one slide's image would put the others' spots on it:
    an image whose library names none of the slides is an error. Without an image the same holds
    for slides whose tissue coordinates (``xy``) overlap: drawn together, each would cover the
    others, so several such slides and no ``library`` naming one of them is an error too. Slides laid
    out apart in the frame (tiled side by side) are drawn together, and so are all slides when ``xy``
    is ``None`` (another basis than the tissue frame, such as a UMAP, where they mix by design).
    """
    from gearsx._anndata import image_slide_key

    everything = np.ones(adata.n_obs, dtype=bool)
    slide_key = image_slide_key(adata)
    if slide_key is None or adata.obs[slide_key].nunique() < 2:
        return everything
    slides = adata.obs[slide_key].astype(str).to_numpy()
    if library is not None and str(library) in slides:
        return slides == str(library)
    names = sorted(set(slides))
    if drawing_image:
        msg = (
            f"`adata` holds {len(names)} slides (obs[{slide_key!r}]) and the image of library {library!r} "
            "is none of them: every slide's spots would be drawn over it. Key `uns['spatial']` by the slide "
            f"names, or pass one slide, e.g. `adata[adata.obs[{slide_key!r}] == {slides[0]!r}]`."
        )
        raise ValueError(msg)
    if xy is not None and _slides_overlap(xy, slides, names):
        which = "" if library is None else f" (`library_id`={library!r} names none of them)"
        msg = (
            f"`adata` holds {len(names)} slides (obs[{slide_key!r}]) whose coordinates overlap in one frame{which}: "
            f"drawn together, their spots would cover each other. Pass `library_id=` one of {names[:5]} to draw "
            f"one slide, or draw each in turn, e.g. `adata[adata.obs[{slide_key!r}] == {names[0]!r}]`."
        )
        raise ValueError(msg)
    return everything


def _slides_overlap(xy: np.ndarray, slides: np.ndarray, names: list[str]) -> bool:
    """Return whether the bounding boxes of any two slides' spots intersect (share more than an edge)."""
    pts = [xy[slides == n] for n in names]
    boxes = [(p.min(0), p.max(0)) for p in pts]
    for i, (lo_a, hi_a) in enumerate(boxes):
        for lo_b, hi_b in boxes[i + 1 :]:
            if np.all(np.minimum(hi_a, hi_b) > np.maximum(lo_a, lo_b)):
                return True
    return False


def _domain_categories(values: pd.Series) -> tuple[pd.Categorical, int]:
    """Labels as strings in the column's category order (sorted when not categorical), and how many are missing.

    Missing labels (NaN, or the string ``'NA'``, which :func:`gearsx.metrics.domain_scores` also reads as
    unlabelled) get code ``-1``, so they are drawn in :data:`NA_COLOR`; the order of a categorical
    column is kept, so colours stored by scanpy in ``uns[f'{key}_colors']`` go to their categories.
    """
    text = values.astype("object").astype(str).to_numpy()
    missing = values.isna().to_numpy() | (text == "NA")
    if isinstance(values.dtype, pd.CategoricalDtype):
        order = [str(c) for c in values.cat.categories if str(c) != "NA"]
    else:
        order = sorted(set(text[~missing]))
    return pd.Categorical(np.where(missing, None, text), categories=order), int(missing.sum())
