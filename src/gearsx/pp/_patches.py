from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from gearsx._anndata import check_key_added, check_obsm_key, image_slide_key, write_record
from gearsx._keys import Key
from gearsx._utils import check_coords, check_positive_int, names_fingerprint

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["extract_patches"]

logger = logging.getLogger(__name__)
_RESOLUTIONS = ("hires", "lowres", "fullres")


def _resolve_library(adata: AnnData, library_id: str | None) -> str:
    libs = list(adata.uns.get(Key.spatial, {}).keys())
    if not libs:
        msg = "`adata.uns['spatial']` is missing or empty; pass `image=` with resolution='fullres', or load the slide with scanpy/squidpy."
        raise KeyError(msg)
    if library_id is None:
        if len(libs) > 1:
            msg = f"`adata.uns['spatial']` holds several libraries {libs}; choose one with `library_id=`."
            raise ValueError(msg)
        return libs[0]
    if library_id not in libs:
        msg = f"`library_id`={library_id!r} is not in `adata.uns['spatial']`; available ids: {libs}."
        raise KeyError(msg)
    return library_id


def extract_patches(
    adata: AnnData,
    *,
    library_id: str | None = None,
    size: int = 224,
    resolution: Literal["hires", "lowres", "fullres"] = "hires",
    image: np.ndarray | None = None,
    spatial_key: str = Key.spatial,
    path: str | Path | None = None,
    pad_value: float = 0,
    key_added: str = Key.patches,
) -> np.memmap:
    """Cut a square image tile centred on every spot (see :ref:`gears-preprocessing`).

    ``obsm[spatial_key]`` holds full-resolution (x, y) = (column, row) pixel
    coordinates. A tile is cut from the image of the chosen ``resolution`` around
    ``round(coords * scalef)``, where ``scalef`` is that resolution's scale factor
    (``tissue_hires_scalef`` / ``tissue_lowres_scalef``; 1 for ``'fullres'``). The
    spot's pixel lands at index ``size // 2`` of the tile in both directions. Tiles that
    reach past the image border are padded with ``pad_value``, never shifted.

    Tiles are written to a ``.npy`` file opened as a memory map, so ``N`` full tiles
    need not fit in memory.

    Parameters
    ----------
    adata
        Spatial data (e.g. Visium read by :func:`scanpy.read_visium`).
    library_id
        Key in ``uns['spatial']``; required when there are several and ``adata`` holds one slide.
        When ``adata`` holds several slides (the slide column an earlier gearsx step recorded, else
        a column such as ``library_id`` or ``sample_id`` whose values name the libraries), leave it
        ``None``: each slide is cut from the image keyed by its name, at that image's scale factor
        (one slide's image for all would be an error).
    size
        Tile edge, in pixels of the chosen image.
    resolution
        ``'hires'`` or ``'lowres'`` (image and scale factor from ``uns['spatial']``) or
        ``'fullres'`` (pass the full-resolution image as ``image``).
    image
        Image array ``(rows, cols[, channels])`` to cut instead of the stored one (its
        resolution is still ``resolution``).
    spatial_key
        ``obsm`` key of the full-resolution spot coordinates.
    path
        Where to write the tiles (``.npy``); default: a new temporary folder.
    pad_value
        Value of padded pixels.
    key_added
        ``uns`` key recording the file, its shape and the parameters.

    Returns
    -------
    A read-only :class:`numpy.memmap` of shape ``(n_obs, size, size, channels)`` in obs
    order (supports ``patches[i]`` and slicing). ``uns[key_added]`` records ``path``,
    ``shape``, ``scalef``, a fingerprint of ``obs_names`` (which spots, in which order: the tiles
    are refused for an AnnData reordered since) and the parameters (with several slides,
    ``params['library_id']`` and ``scalef`` are arrays, one entry per slide).

    Examples
    --------
    >>> import numpy as np, anndata as ad, gearsx as gx
    >>> adata = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
    >>> adata.obsm["spatial"] = np.array([[100.0, 50.0], [10.0, 10.0]])
    >>> img = np.zeros((100, 200, 3), dtype=np.uint8)
    >>> tiles = gx.pp.extract_patches(adata, image=img, resolution="fullres", size=32)
    >>> tiles.shape
    (2, 32, 32, 3)
    """
    # it names uns and a file only; 'spatial' stays reserved for the images
    check_key_added(key_added, owner="gx.pp.extract_patches")
    if resolution not in _RESOLUTIONS:
        msg = f"`resolution` must be one of {_RESOLUTIONS}; got {resolution!r}."
        raise ValueError(msg)
    size = check_positive_int(size, name="size")
    check_obsm_key(adata, spatial_key, "spatial_key", "patches need full-resolution spot coordinates")
    coords = check_coords(adata.obsm[spatial_key], name=f"obsm[{spatial_key!r}]", n_dims=2)
    slide_key = image_slide_key(adata)
    slides = adata.obs[slide_key].astype(str).to_numpy() if slide_key is not None else None
    several = slides is not None and len(set(slides)) > 1
    if several and (library_id is not None or image is not None):
        names = sorted(set(slides))
        msg = (
            f"`adata` holds {len(names)} slides (obs[{slide_key!r}]: {names[:5]}), and "
            f"{'`image`' if image is not None else f'`library_id`={library_id!r}'} is one slide's image: every "
            "slide's spots would be cut from it. Pass library_id=None (and no `image`) to cut each slide from its "
            "own image in `uns['spatial']`, keyed by the slide's name, or pass one slide, e.g. "
            f"`adata[adata.obs[{slide_key!r}] == {names[0]!r}]`."
        )
        raise ValueError(msg)
    if resolution == "fullres":
        if image is None:
            msg = "resolution='fullres' needs the full-resolution image as `image=` (Space Ranger does not store it in uns)."
            raise ValueError(msg)
        jobs = [(np.arange(len(coords)), "", np.asarray(image), 1.0)]
    elif several:
        libs = list(adata.uns.get(Key.spatial, {}) or {})
        names = list(dict.fromkeys(slides))
        missing = [n for n in names if n not in libs]
        if missing:
            msg = (
                f"`adata` holds {len(names)} slides (obs[{slide_key!r}]), and `uns['spatial']` has no library for "
                f"{missing[:5]} (its libraries: {libs[:5]}): each slide is cut from the image keyed by its name. "
                "Key each slide's image by its name, or pass one slide."
            )
            raise KeyError(msg)
        jobs = [(np.flatnonzero(slides == n), n, *_library_image(adata, n, resolution, None)) for n in names]
    else:
        lib = _resolve_library(adata, library_id)
        jobs = [(np.arange(len(coords)), lib, *_library_image(adata, lib, resolution, image))]
    jobs = [(rows, lib, _as_image(img), scalef) for rows, lib, img, scalef in jobs]
    shapes = {img.shape[2] for _, _, img, _ in jobs}
    if len(shapes) > 1:
        msg = f"The slides' images have {sorted(shapes)} channels; cut each slide alone (adata[adata.obs[...] == ...])."
        raise ValueError(msg)
    channels, dtype = shapes.pop(), np.result_type(*(img.dtype for _, _, img, _ in jobs))
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="gearsx_patches_")) / f"{key_added}.npy"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(len(coords), size, size, channels))
    outside = sum(_cut(out, img, coords, rows, scalef, size, pad_value) for rows, _, img, scalef in jobs)
    out.flush()
    if outside:
        logger.warning("%d of %d spots lie outside the image; their tiles are all padding.", outside, len(coords))
    if len(jobs) == 1:
        lib_record, scalef_record = jobs[0][1], jobs[0][3]
    else:  # each slide from its own image: the libraries in the order of the slides' first spots, and their factors
        lib_record = np.array([job[1] for job in jobs], dtype=object)
        scalef_record = np.array([job[3] for job in jobs])
    params = {"library_id": lib_record, "size": size, "resolution": resolution, "spatial_key": spatial_key}
    write_record(
        adata, key_added, params, path=str(path), shape=np.asarray(out.shape, dtype=np.int64), scalef=scalef_record,
        obs_names=names_fingerprint(adata.obs_names),  # the rows the tiles belong to, in order
    )  # fmt: skip
    del out
    return np.load(path, mmap_mode="r")


def _library_image(adata: AnnData, lib: str, resolution: str, image: np.ndarray | None) -> tuple:
    """``(image, scale factor)`` of library ``lib`` at ``resolution`` (``image``, when given, replaces the stored one)."""
    entry = adata.uns[Key.spatial][lib]
    factors = entry.get("scalefactors", {})
    factor_key = f"tissue_{resolution}_scalef"
    if factor_key not in factors:
        msg = (
            f"Scale factor {factor_key!r} is missing in uns['spatial'][{lib!r}]['scalefactors'] "
            f"(available: {sorted(factors)}); it is needed to map full-resolution coordinates to the {resolution} image."
        )
        raise KeyError(msg)
    scalef = float(factors[factor_key])
    if not np.isfinite(scalef) or scalef <= 0:
        msg = (
            f"Scale factor uns['spatial'][{lib!r}]['scalefactors'][{factor_key!r}] is {scalef}; it must be a "
            f"positive number (the {resolution} image's pixels per full-resolution pixel, e.g. 0.05-0.2)."
        )
        raise ValueError(msg)
    if image is None:
        images = entry.get("images", {})
        if resolution not in images:
            msg = f"No {resolution!r} image in uns['spatial'][{lib!r}]['images'] (available: {sorted(images)})."
            raise KeyError(msg)
        image = images[resolution]
    return np.asarray(image), scalef


def _as_image(image: np.ndarray) -> np.ndarray:
    """``image`` as ``(rows, cols, channels)``; a ValueError for any other shape."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        msg = f"`image` must have shape (rows, cols) or (rows, cols, channels); got {image.shape}."
        raise ValueError(msg)
    return image


def _cut(out, image: np.ndarray, coords: np.ndarray, rows: np.ndarray, scalef: float, size: int, pad_value) -> int:
    """Write the tiles of spots ``rows`` into ``out`` (padded past the border); return how many lie outside."""
    n_rows, n_cols = image.shape[:2]
    centre = np.rint(coords[rows] * scalef).astype(np.int64)  # (x, y) = (col, row)
    top = centre[:, 1] - size // 2
    left = centre[:, 0] - size // 2
    outside = 0
    for i, r0, c0 in zip(rows, top, left, strict=True):
        rs, re = max(r0, 0), min(r0 + size, n_rows)
        cs, ce = max(c0, 0), min(c0 + size, n_cols)
        tile = out[i]
        if rs >= re or cs >= ce:
            tile[...] = pad_value
            outside += 1
            continue
        if rs > r0 or cs > c0 or re < r0 + size or ce < c0 + size:
            tile[...] = pad_value
        tile[rs - r0 : re - r0, cs - c0 : ce - c0] = image[rs:re, cs:ce]
    return outside
