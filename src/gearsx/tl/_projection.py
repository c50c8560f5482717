"""``gx.tl.project_groups``: maps of where each group of anchored cells lands, spot by spot."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from gearsx._anndata import (
    anchored_slide_rows,
    check_key_added,
    check_key_name,
    check_obs_key,
    group_labels,
    obsm_coords,
    write_record,
)
from gearsx._keys import Key
from gearsx._utils import checks_flags
from gearsx.geometry._knn import knn_without_self, tree_knn

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["project_groups"]

logger = logging.getLogger(__name__)


@checks_flags
def project_groups(
    adata: AnnData,
    adata_st: AnnData,
    groupby: str,
    *,
    key: str = Key.result,
    normalize: bool = False,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Map where each group of anchored cells lands on the reference slide, spot by spot.

    An anchored :func:`gearsx.tl.reconstruct` places each cell at the weighted mean of its matched
    spots (see :doc:`/anchoring`) and keeps those matches and weights
    (``obsm['gears_anchor_spots']``, ``obsm['gears_anchor_weights']``; with ``anchor_transport=True``
    also the transport plan's heaviest spots, weighed by their share in the blended anchor; a spot
    listed twice for a cell counts with both weights). Here each cell's weights are
    summed per spot over the cells of each group of ``adata.obs[groupby]``: spot ``s`` receives
    ``sum_{cells c in group g} w(c, s)``, the expected number of the group's cells there when each
    cell lies at one of its matched spots with the probability its weight gives. Every cell carries a
    total weight of one, so a group's column sums to its number of cells (cells without a single
    count carry none). This is the map a group's mean position comes from; it shows how the group
    spreads, which a mean does not (a cell type in two layers has its mean between them).
    Like Tangram's projection of cell annotations, the result goes to the spatial data.

    Parameters
    ----------
    adata
        Cells reconstructed by :func:`gearsx.tl.reconstruct` in anchored mode, with the groups in
        ``obs[groupby]``.
    adata_st
        The spatial data the model was trained on (or any AnnData holding its reference slide's
        spots): the spots are found by the slide column and the coordinates the run recorded
        (``uns[key]['anchor']``), whatever the order of the rows.
    groupby
        Categorical ``obs`` column of ``adata`` (cell types, clusters, dissected layers). Cells
        without a value (``NaN``) are left out and counted in the record.
    key
        ``key_added`` of the reconstruction.
    normalize
        Divide each spot's row by its total: the share of each group among the cells matched there
        (``NaN`` at spots no cell weighs on). Default: the expected numbers of cells.
    key_added
        ``obsm`` key of ``adata_st`` for the map; default ``f'{key}_{groupby}'``. Its parameters go
        to ``uns[key_added]``.
    copy
        Return a modified copy of ``adata_st`` instead of writing to it.

    Returns
    -------
    ``None`` or the copy of ``adata_st``. Writes ``adata_st.obsm[key_added]``: a
    :class:`pandas.DataFrame` with one row per spot of ``adata_st`` and one column per group
    (``NaN`` on spots of other slides than the one the cells were anchored on), and
    ``adata_st.uns[key_added]`` with the parameters, the slide and the cells left out. To draw one
    group with scanpy, copy its column to ``obs``:
    ``adata_st.obs['Astrocyte'] = adata_st.obsm['gears_cell_type']['Astrocyte']``.

    Examples
    --------
    >>> import gearsx as gx
    >>> gx.tl.reconstruct(adata_sc, model)  # doctest: +SKIP
    >>> gx.tl.project_groups(adata_sc, adata_st, "cell_type")  # doctest: +SKIP
    >>> adata_st.obsm["gears_cell_type"].sum()  # doctest: +SKIP
    """
    check_key_name(key, arg="key")  # the key a reconstruction wrote, read here
    record = _anchor_record(adata, key)
    check_obs_key(adata, groupby, "groupby")
    key_added = check_key_added(
        f"{key}_{groupby}" if key_added is None else key_added, spatial_key=str(record.get("spatial_key", Key.spatial))
    )
    spots = np.asarray(adata.obsm[Key.anchor_spots(key)])
    weights = np.asarray(adata.obsm[Key.anchor_weights(key)])
    ref_coords = np.asarray(record["spot_coords"], dtype=np.float64)
    if spots.shape != weights.shape or spots.size and (spots.min() < 0 or spots.max() >= len(ref_coords)):
        msg = (
            f"`adata.obsm[{Key.anchor_spots(key)!r}]` and `adata.obsm[{Key.anchor_weights(key)!r}]` do not describe "
            f"matches to the {len(ref_coords)} spots recorded in `uns[{key!r}]['anchor']`; run gx.tl.reconstruct again."
        )
        raise ValueError(msg)
    rows = _reference_rows(adata_st, record, ref_coords)
    codes = group_labels(adata, groupby, "groupby")
    names = [str(c) for c in codes.categories]
    grouped = codes.codes >= 0  # cells without a group are left out
    bins = (spots[grouped].astype(np.int64) * len(names) + codes.codes[grouped, None]).ravel()  # (spot, group) pairs
    table = np.bincount(bins, weights=weights[grouped].ravel(), minlength=len(ref_coords) * len(names))
    table = table.reshape(len(ref_coords), len(names))
    if normalize:
        total = table.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            table = np.where(total > 0, table / total, np.nan)
    adata_st = adata_st.copy() if copy else adata_st
    out = np.full((adata_st.n_obs, len(names)), np.nan)
    out[rows] = table
    if key_added in adata_st.obsm:
        logger.info("replacing existing %r", key_added)
    adata_st.obsm[key_added] = pd.DataFrame(out, index=adata_st.obs_names, columns=names)
    write_record(
        adata_st,
        key_added,
        {"groupby": groupby, "key": key, "normalize": normalize},
        slide=str(record["slide"]),
        n_spots=len(rows),
        n_cells=int(grouped.sum()),
        n_cells_without_group=int((~grouped).sum()),
    )
    return adata_st if copy else None


def _anchor_record(adata: AnnData, key: str) -> dict:
    """Return the anchoring record of the reconstruction under ``key``, or say what is missing."""
    record = adata.uns.get(key, {}).get("anchor") if isinstance(adata.uns.get(key), dict) else None
    if record is None:
        msg = (
            f"`adata.uns[{key!r}]['anchor']` is missing: run gx.tl.reconstruct(adata, model) first (or pass its `key`)."
        )
        raise KeyError(msg)
    if record.get("mode") != "reference":
        msg = (
            f"The cells under {key!r} were not anchored (mode {record.get('mode')!r}: {record.get('decision', '')}), so "
            "they were matched to no spots. Reconstruct with anchor='reference' to place them on the reference."
        )
        raise ValueError(msg)
    missing = [k for k in (Key.anchor_spots(key), Key.anchor_weights(key)) if k not in adata.obsm]
    if missing or "spot_coords" not in record:
        msg = (
            f"`adata` lacks the anchored run's matches ({', '.join(missing) or 'the recorded spot coordinates'}): "
            "it was reconstructed by an older gearsx. Run gx.tl.reconstruct again."
        )
        raise ValueError(msg)
    return record


def _reference_rows(adata_st: AnnData, record: dict, ref_coords: np.ndarray) -> np.ndarray:
    """Row of ``adata_st`` of each recorded reference spot (the slide's column, then equal coordinates)."""
    spatial_key = str(record.get("spatial_key", Key.spatial))
    coords = obsm_coords(adata_st, spatial_key, "the coordinates of `adata_st`'s spots")
    _, candidates = anchored_slide_rows(adata_st, record)
    pts = coords[candidates]
    if len(pts) == len(ref_coords) and np.array_equal(pts, ref_coords):
        return candidates  # the same spots in the same order
    # the same position, up to a thousandth of the spots' spacing: coordinates stored in float32 (or read back
    # from a file that rounded them) differ from the model's float64 copy by far more than their own rounding
    spacing = float(np.median(knn_without_self(cKDTree(ref_coords), ref_coords, 1)[0])) if len(ref_coords) > 1 else 0.0
    tol = 1e-3 * spacing
    found = np.full(len(ref_coords), -1)
    if len(pts):
        dist, idx = tree_knn(cKDTree(pts), ref_coords, 2)
        ambiguous = (dist[:, 1] <= tol) if dist.shape[1] > 1 else np.zeros(len(ref_coords), dtype=bool)
        if ambiguous.any():
            msg = (
                f"{int(ambiguous.sum())} spots of slide {record['slide']!r} share their coordinates in "
                f"`adata_st.obsm[{spatial_key!r}]` with another spot, so the matched spots cannot be told apart "
                "there; pass the spatial data in the row order the model was trained on."
            )
            raise ValueError(msg)
        hit = dist[:, 0] <= tol
        found[hit] = candidates[idx[hit, 0]]
    if (found < 0).any():
        msg = (
            f"`adata_st` lacks {int((found < 0).sum())} of the {len(ref_coords)} spots of slide {record['slide']!r} the "
            f"cells were matched to (looked up by `obsm[{spatial_key!r}]`): pass the spatial data the model was "
            "trained on."
        )
        raise ValueError(msg)
    return found
