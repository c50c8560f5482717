from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from gearsx._anndata import write_record
from gearsx._keys import Key
from gearsx._utils import check_coords, check_positive_int

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["pseudo_spots", "spot_grid"]

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
    if not center_to_center > 0:
        msg = f"`center_to_center` must be positive; got {center_to_center!r}."
        raise ValueError(msg)
    dy = center_to_center * (np.sqrt(3.0) / 2.0 if layout == "hex" else 1.0)
    ys = np.arange(lower[1], upper[1] + dy, dy)
    xs = np.arange(lower[0] - center_to_center, upper[0] + center_to_center, center_to_center)
    gx, gy = np.meshgrid(xs, ys)
    if layout == "hex":
        gx = gx + (np.arange(len(ys))[:, None] % 2) * (center_to_center / 2.0)
    return np.column_stack([gx.ravel(), gy.ravel()])


def pseudo_spots(
    adata_cells: AnnData,
    *,
    spot_diameter: float,
    center_to_center: float,
    layout: Literal["hex", "square"] = "hex",
    min_cells: int = 1,
    spatial_key: str = Key.spatial,
    label_key: str | None = None,
) -> AnnData:
    """Aggregate single-cell-resolution spatial data into Visium-like spots.

    This is the benchmark protocol of the GEARS paper: a regular array of circular
    spots is laid over the tissue, every cell whose centre lies inside a spot is
    assigned to it, and the spot's expression is the sum of its cells' expression.
    When spots overlap (``spot_diameter > center_to_center``) a cell goes to the
    nearest spot only, so every cell is counted at most once and total counts are
    conserved over the assigned cells.

    Parameters
    ----------
    adata_cells
        Single-cell-resolution data with 2-D coordinates in ``obsm[spatial_key]``
        (dense or sparse ``X``; counts are expected, any additive quantity works).
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
        per-category cell counts in ``obsm['spot_cell_counts']`` and the majority
        category in ``obs[label_key]``.

    Returns
    -------
    A new :class:`~anndata.AnnData` of spots with

    ``X``
        Summed expression (sparse CSR if the input was sparse).
    ``obs['n_cells']``
        Number of cells in each spot.
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
    from scipy.spatial import cKDTree

    if spatial_key not in adata_cells.obsm:
        msg = (
            f"`adata_cells.obsm[{spatial_key!r}]` is missing; pseudo-spots need cell coordinates. "
            f"Available obsm keys: {sorted(adata_cells.obsm.keys())}."
        )
        raise KeyError(msg)
    coords = check_coords(adata_cells.obsm[spatial_key], name=f"obsm[{spatial_key!r}]", n_dims=2)
    if not spot_diameter > 0:
        msg = f"`spot_diameter` must be positive; got {spot_diameter!r}."
        raise ValueError(msg)
    min_cells = check_positive_int(min_cells, name="min_cells")
    if label_key is not None and label_key not in adata_cells.obs:
        msg = f"`label_key`={label_key!r} is not a column of `adata_cells.obs`."
        raise KeyError(msg)

    centres = spot_grid(coords.min(0), coords.max(0), center_to_center=center_to_center, layout=layout)
    dist, nearest = cKDTree(centres).query(coords)
    inside = dist <= spot_diameter / 2.0
    n_per_spot = np.bincount(nearest[inside], minlength=len(centres))
    kept = np.flatnonzero(n_per_spot >= min_cells)
    if len(kept) == 0:
        msg = (
            f"No spot holds >= {min_cells} cells (spot_diameter={spot_diameter}, center_to_center={center_to_center} "
            f"in the units of obsm[{spatial_key!r}], whose extent is {np.ptp(coords, axis=0)}). Check the units."
        )
        raise ValueError(msg)
    new_index = np.full(len(centres), -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    cell_spot = np.where(inside, new_index[nearest], -1)
    assigned = np.flatnonzero(cell_spot >= 0)
    agg = sp.csr_matrix(
        (np.ones(len(assigned), dtype=np.float32), (cell_spot[assigned], assigned)),
        shape=(len(kept), adata_cells.n_obs),
    )
    x = adata_cells.X
    summed = agg @ x
    if sp.issparse(summed):
        summed = sp.csr_matrix(summed)
    else:
        summed = np.asarray(summed)

    obs = pd.DataFrame(
        {Key.n_cells: n_per_spot[kept].astype(np.int64)}, index=pd.Index([f"spot_{i}" for i in kept], dtype=str)
    )
    out = AnnData(X=summed, obs=obs, var=adata_cells.var.copy())
    out.obsm[spatial_key] = centres[kept]
    if label_key is not None:
        labels = pd.Categorical(adata_cells.obs[label_key])
        onehot = sp.csr_matrix(
            (np.ones(len(assigned)), (assigned, labels.codes[assigned])),
            shape=(adata_cells.n_obs, len(labels.categories)),
        )
        counts = np.asarray((agg @ onehot).todense(), dtype=np.int64)
        out.obsm[Key.spot_cell_counts] = pd.DataFrame(
            counts, index=out.obs_names, columns=labels.categories.astype(str)
        )
        out.obs[label_key] = pd.Categorical.from_codes(counts.argmax(1), categories=labels.categories)
    params = {
        "spot_diameter": float(spot_diameter),
        "center_to_center": float(center_to_center),
        "layout": layout,
        "min_cells": min_cells,
        "spatial_key": spatial_key,
        "label_key": label_key if label_key is not None else "",
    }
    write_record(
        out,
        Key.pseudo_spots,
        params,
        cell_spot=cell_spot,
        n_cells_in_spots=int(len(assigned)),
        n_cells_total=int(adata_cells.n_obs),
    )
    return out
