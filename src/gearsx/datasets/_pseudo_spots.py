from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np

from gearsx._anndata import (
    all_integers,
    check_finite_matrix,
    group_labels,
    looks_logged,
    resolve_slide_key,
    stored_sample,
    write_record,
)
from gearsx._keys import Key
from gearsx._utils import check_coords, check_positive_int, check_positive_number

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["pseudo_spots", "spot_grid"]

logger = logging.getLogger(__name__)

_LAYOUTS = ("hex", "square")


def spot_grid(
    lower: np.ndarray, upper: np.ndarray, *, center_to_center: float, layout: Literal["hex", "square"] = "hex"
) -> np.ndarray:
    """Centres of a regular spot array covering the box ``[lower, upper]``.

    ``'hex'`` is the Visium array (rows ``center_to_center * sqrt(3) / 2`` apart,
    odd rows shifted by half a spacing); ``'square'`` is the original ST array.
    """
    if layout not in _LAYOUTS:
        msg = f"`layout` must be one of {_LAYOUTS}; got {layout!r}."
        raise ValueError(msg)
    center_to_center = check_positive_number(center_to_center, name="center_to_center")
    dy = center_to_center * (np.sqrt(3.0) / 2.0 if layout == "hex" else 1.0)
    ys = np.arange(lower[1], upper[1] + dy, dy)
    xs = np.arange(lower[0] - center_to_center, upper[0] + center_to_center, center_to_center)
    gx, gy = np.meshgrid(xs, ys)
    if layout == "hex":
        gx = gx + (np.arange(len(ys))[:, None] % 2) * (center_to_center / 2.0)
    return np.column_stack([gx.ravel(), gy.ravel()])


def _check_additive(adata: AnnData) -> None:
    """Raise when ``adata.X`` cannot be summed into spots: non-finite, negative, or log-transformed."""
    import scipy.sparse as sp

    x = adata.X
    check_finite_matrix(x, "adata_cells.X")
    data = x.data if sp.issparse(x) else np.asarray(x)
    lo = float(data.min()) if data.size else 0.0
    if lo < 0:
        msg = (
            f"`adata_cells.X` holds negative values (min {lo:.3g}): scaled or centred data cannot be "
            "summed into spots. Pass the counts (e.g. `adata.X = adata.layers['counts']`)."
        )
        raise ValueError(msg)
    if "log1p" in adata.uns and not all_integers(stored_sample(x)):
        msg = (
            "`adata_cells.X` is log-transformed (uns['log1p'] and non-integer values): a sum of logs is no spot's "
            "expression. Pass the counts (e.g. `adata.X = adata.layers['counts']`)."
        )
        raise ValueError(msg)
    if looks_logged(adata):  # non-integer, all below 20, and no record: most likely logs whose record was lost
        logger.warning(
            "pseudo_spots: `adata_cells.X` looks log-transformed (non-integer values, all below 20, no "
            "uns['log1p'] record); a sum of logs is no spot's expression. If so, pass the counts "
            "(e.g. `adata.X = adata.layers['counts']`); additive values such as intensities are summed as given."
        )


def pseudo_spots(
    adata_cells: AnnData,
    *,
    spot_diameter: float,
    center_to_center: float,
    layout: Literal["hex", "square"] = "hex",
    min_cells: int = 1,
    spatial_key: str = Key.spatial,
    label_key: str | None = None,
    slide_key: str | None = None,
) -> AnnData:
    """Aggregate single-cell-resolution spatial data into Visium-like spots.

    This is how gearsx's benchmarks make spots of single-cell data: a regular array of circular
    spots is laid over the tissue, every cell whose centre lies inside a spot is
    assigned to it, and the spot's expression is the sum of its cells' expression.
    When spots overlap (``spot_diameter > center_to_center``) a cell goes to the
    nearest spot only, so every cell is counted at most once and total counts are
    conserved over the assigned cells.

    Parameters
    ----------
    adata_cells
        Single-cell-resolution data with 2-D coordinates in ``obsm[spatial_key]``
        (dense or sparse ``X``; counts are expected, any additive quantity works). Negative values
        (scaled data) and log-transformed values (non-integer under ``uns['log1p']``) are an
        error: their sums are no spot's expression. Non-integer values all below 20 without that
        record draw a warning (the rule :func:`gearsx.pp.prepare` reads as log-normalised).
    spot_diameter
        Spot diameter, in the units of the coordinates (Visium: 55 µm).
    center_to_center
        Distance between neighbouring spot centres (Visium: 100 µm).
    layout
        ``'hex'`` (Visium) or ``'square'`` (original ST array).
    min_cells
        Spots with fewer assigned cells are dropped.
    spatial_key
        ``obsm`` key of the cell coordinates.
    label_key
        Optional categorical ``obs`` column (e.g. cell type). If given, the spots get
        per-category cell counts in ``obsm['spot_cell_counts']`` (a data frame whose columns are
        the categories) and the majority category in ``obs[label_key]``. A category holding a
        ``'/'`` (``'L2/3 IT'``) gets a warning: anndata (0.12 and later) cannot write such a column to zarr.
        Cells without a label (``NaN``) are summed into their spots' expression but counted in no
        category (a warning says how many); a spot with no labelled cell gets ``NaN``. Floats are
        an error (a continuous column has no categories to count).
    slide_key
        ``obs`` column with the slide (section) of each cell: each slide gets its own spot array, so
        no spot sums cells of different slides. ``None``: the slide column an earlier gearsx step
        recorded, else one slide (a warning names ``obs['slide']``, ``obs['library_id']`` or a
        similar column when it holds several values).

    Returns
    -------
    A new :class:`~anndata.AnnData` of spots with

    ``X``
        Summed expression (sparse CSR if the input was sparse).
    ``obs['n_cells']``
        Number of cells in each spot.
    ``obs[slide_key]``
        The spot's slide (only with a slide key; spot names then start with the slide).
    ``obsm['spatial']``
        Spot centres, in the units of the input coordinates.
    ``obsm['spot_cell_counts']``
        Per-category cell counts (only with ``label_key``).
    ``uns['pseudo_spots']``
        Parameters and ``cell_spot``: for each input cell (in input order) the integer
        position of its spot in the output, or -1 when it fell outside every kept spot.

    Examples
    --------
    >>> import gearsx as gx
    >>> _, cells = gx.datasets.simulate_tissue(n_slides=1, n_cells_per_slide=2000, random_state=0)
    >>> cells.obsm["spatial"] = cells.obsm["spatial_gt"]
    >>> spots = gx.datasets.pseudo_spots(cells, spot_diameter=88.0, center_to_center=160.0)
    >>> int(spots.obs["n_cells"].sum()) == int((spots.uns["pseudo_spots"]["cell_spot"] >= 0).sum())
    True
    """
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData

    if spatial_key not in adata_cells.obsm:
        msg = (
            f"`adata_cells.obsm[{spatial_key!r}]` is missing; pseudo-spots need cell coordinates. "
            f"Available obsm keys: {sorted(adata_cells.obsm.keys())}."
        )
        raise KeyError(msg)
    coords = check_coords(adata_cells.obsm[spatial_key], name=f"obsm[{spatial_key!r}]", n_dims=2)
    spot_diameter = check_positive_number(spot_diameter, name="spot_diameter")
    center_to_center = check_positive_number(center_to_center, name="center_to_center")
    min_cells = check_positive_int(min_cells, name="min_cells")
    _check_additive(adata_cells)
    labels = group_labels(adata_cells, label_key, "label_key", "adata_cells") if label_key is not None else None
    slide_key = resolve_slide_key(adata_cells, slide_key)
    slides = adata_cells.obs[slide_key].astype(str).to_numpy() if slide_key is not None else None
    n_unlabelled = int((labels.codes < 0).sum()) if labels is not None else 0
    if n_unlabelled:
        logger.warning(
            "pseudo_spots: %d of the %d cells have no label in obs[%r]; they are summed into their spots' "
            "expression and counted in obs['n_cells'], but not in obsm['spot_cell_counts'] nor in the spots' "
            "majority label (NaN where a spot holds no labelled cell).",
            n_unlabelled, adata_cells.n_obs, label_key,
        )  # fmt: skip
    slashed = [str(c) for c in labels.categories if "/" in str(c)] if labels is not None else []
    if slashed:
        logger.warning(
            "pseudo_spots: labels %s of obs[%r] hold a '/', and name columns of obsm['spot_cell_counts']: "
            "anndata (0.12 and later) cannot write such a column to zarr, and warns that h5ad will follow. To save "
            "the spots, rename the labels first, e.g. adata.obs[%r] = adata.obs[%r].astype(str).str.replace('/', '-').",
            slashed[:5], label_key, label_key, label_key,
        )  # fmt: skip

    cell_spot = np.full(adata_cells.n_obs, -1, dtype=np.int64)
    xs, names, n_cells, centres, counts, slide_of = [], [], [], [], [], []
    for slide in np.unique(slides) if slides is not None else [None]:
        rows = np.flatnonzero(slides == slide) if slide is not None else np.arange(adata_cells.n_obs)
        kept, centre, n_in, local_spot = _assign(
            coords[rows], spot_diameter, center_to_center, layout, min_cells, spatial_key, slide
        )
        assigned = np.flatnonzero(local_spot >= 0)
        agg = sp.csr_matrix(
            (np.ones(len(assigned), dtype=np.float32), (local_spot[assigned], assigned)), shape=(len(kept), len(rows))
        )
        x = adata_cells.X if slide is None else adata_cells.X[rows]
        summed = agg @ x
        xs.append(sp.csr_matrix(summed) if sp.issparse(summed) else np.asarray(summed))
        cell_spot[rows[assigned]] = local_spot[assigned] + len(names)  # spots of earlier slides come first
        prefix = "spot_" if slide is None else f"{slide}_spot_"
        names += [f"{prefix}{i}" for i in kept]
        n_cells.append(n_in)
        centres.append(centre)
        slide_of += [slide] * len(kept)
        if labels is not None:
            labelled = assigned[labels.codes[rows[assigned]] >= 0]  # unlabelled cells count in no category
            onehot = sp.csr_matrix(
                (np.ones(len(labelled)), (labelled, labels.codes[rows[labelled]])),
                shape=(len(rows), len(labels.categories)),
            )
            counts.append(np.asarray((agg @ onehot).todense(), dtype=np.int64))
    summed = sp.vstack(xs, format="csr") if sp.issparse(xs[0]) else np.vstack(xs)
    obs = pd.DataFrame({Key.n_cells: np.concatenate(n_cells)}, index=pd.Index(names, dtype=str))
    if slide_key is not None:
        obs[slide_key] = pd.Categorical(slide_of, categories=np.unique(slides))
    out = AnnData(X=summed, obs=obs, var=adata_cells.var.copy())
    out.obsm[spatial_key] = np.vstack(centres)
    if labels is not None:
        per_spot = np.vstack(counts)
        out.obsm[Key.spot_cell_counts] = pd.DataFrame(
            per_spot, index=out.obs_names, columns=labels.categories.astype(str)
        )
        majority = np.where(per_spot.sum(1) > 0, per_spot.argmax(1), -1)  # -1: no labelled cell, NaN
        out.obs[label_key] = pd.Categorical.from_codes(majority, categories=labels.categories)
    params = {
        "spot_diameter": float(spot_diameter),
        "center_to_center": float(center_to_center),
        "layout": layout,
        "min_cells": min_cells,
        "spatial_key": spatial_key,
        "label_key": label_key if label_key is not None else "",
        "slide_key": slide_key if slide_key is not None else "",
    }
    write_record(
        out,
        Key.pseudo_spots,
        params,
        cell_spot=cell_spot,
        n_cells_in_spots=int((cell_spot >= 0).sum()),
        n_cells_total=int(adata_cells.n_obs),
    )
    return out


def _assign(coords, spot_diameter, center_to_center, layout, min_cells, spatial_key, slide):
    """Lay one spot array over one slide's cells.

    Returns the kept spots' grid indices, their centres, their cell counts and each cell's spot (an
    index into the kept spots, ``-1`` outside every kept spot).
    """
    from scipy.spatial import cKDTree

    centres = spot_grid(coords.min(0), coords.max(0), center_to_center=center_to_center, layout=layout)
    dist, nearest = cKDTree(centres).query(coords)
    inside = dist <= spot_diameter / 2.0
    n_per_spot = np.bincount(nearest[inside], minlength=len(centres))
    kept = np.flatnonzero(n_per_spot >= min_cells)
    if len(kept) == 0:
        where = "" if slide is None else f" of slide {slide!r}"
        msg = (
            f"No spot{where} holds >= {min_cells} cells (spot_diameter={spot_diameter}, "
            f"center_to_center={center_to_center} in the units of obsm[{spatial_key!r}], whose extent is "
            f"{np.ptp(coords, axis=0)}). Check the units."
        )
        raise ValueError(msg)
    new_index = np.full(len(centres), -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    return kept, centres[kept], n_per_spot[kept].astype(np.int64), np.where(inside, new_index[nearest], -1)
