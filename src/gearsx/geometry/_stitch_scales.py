"""Stitching, step 1: from overlapping patches to one consensus graph of scaled distances (see :ref:`gears-reconstruction`).

Per-patch scales by least squares on the log distance ratios of shared cells, edge tables of each
patch, and their weighted-median consensus. Used by :func:`gearsx.geometry.stitch_patches`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lsqr
from scipy.spatial import cKDTree

from gearsx._utils import index_dtype

from ._cover import checked_patch, patch_incidence
from ._gauge import gauge_fix
from ._order import sort_within_groups

__all__ = ["EdgeGraph", "PatchScales", "checked_patches", "consensus_edges", "patch_edge_table", "patch_scales"]


def _patch_edges(y: np.ndarray, k: int, n_long: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Local edges of one gauge-fixed patch: kNN plus ``n_long`` random longer-range edges per cell."""
    m = len(y)
    kk = min(k, m - 1)
    _, nn = cKDTree(y).query(y, k=kk + 1)
    src = np.repeat(np.arange(m), kk)
    dst = nn[:, 1:].ravel()
    if n_long > 0 and m > kk + 1:
        ls = np.repeat(np.arange(m), n_long)
        ld = rng.integers(0, m, len(ls))
        src, dst = np.concatenate([src, ls]), np.concatenate([dst, ld])
    keep = src != dst
    return np.minimum(src, dst)[keep], np.maximum(src, dst)[keep]


def _weighted_median_by_group(group: np.ndarray, values: np.ndarray, weights: np.ndarray):
    """Weighted median, weighted mean absolute deviation, count and total weight of ``values`` per ``group`` (vectorised).

    Returns ``(groups, median, mad, count, total_weight)``, groups in increasing order.
    """
    order = sort_within_groups(group, values)
    g, v, w = group[order], values[order], weights[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, len(g)])
    cw = np.cumsum(w)
    total_before = np.r_[0.0, cw][starts]
    group_total = np.add.reduceat(w, starts)
    half = total_before + 0.5 * group_total
    pos = np.searchsorted(cw, half, side="left")
    med = v[np.minimum(pos, np.r_[starts[1:], len(g)] - 1)]
    dev = np.abs(v - np.repeat(med, counts)) * w
    mad = np.add.reduceat(dev, starts) / group_total
    return g[starts], med, mad, counts, group_total


def _overlap_log_ratios(
    idx_list, y_list, pa, pb, rng, max_cells: int = 64, n_shifts: int = 8, block_rows: int = 4_000_000
):
    """Median log-ratio and mean absolute deviation of distances between shared cells, per patch pair.

    Vectorised over all overlapping pairs ``(pa[t], pb[t])``: every cell's memberships give its
    (patch, patch) pairs; per pair, up to ``max_cells`` shared cells in random order, each compared
    with the ``n_shifts`` next ones (cyclically): ``log d_p - log d_q`` of the same two cells.
    """
    sizes = np.array([len(ix) for ix in idx_list])
    cell = np.concatenate(idx_list)
    patch = np.repeat(np.arange(len(idx_list)), sizes)
    row = np.arange(len(cell))  # row of the cell in the concatenated patch coordinates
    order = np.lexsort((patch, cell))
    cell, patch, row = cell[order], patch[order], row[order]
    # all pairs of memberships of the same cell (patches in increasing order)
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    k = np.diff(np.r_[starts, len(cell)])
    pos = np.arange(len(cell)) - np.repeat(starts, k)
    n_after = np.repeat(k, k) - pos - 1
    first = np.repeat(np.arange(len(cell)), n_after)
    step = np.arange(len(first)) - np.repeat(np.cumsum(n_after) - n_after, n_after) + 1
    second = first + step
    n_patches = len(idx_list)
    key = patch[first].astype(np.int64) * n_patches + patch[second]
    wanted = np.sort(pa.astype(np.int64) * n_patches + pb)
    sel = np.isin(key, wanted)
    key, ra, rb = key[sel], row[first[sel]], row[second[sel]]
    # up to max_cells shared cells per pair, in random order
    order = sort_within_groups(key, rng.random(len(key)))
    key, ra, rb = key[order], ra[order], rb[order]
    gstart = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    gsize = np.diff(np.r_[gstart, len(key)])
    rank = np.arange(len(key)) - np.repeat(gstart, gsize)
    take = rank < max_cells
    key, ra, rb, rank = key[take], ra[take], rb[take], rank[take]
    m = np.minimum(gsize, max_cells)
    gfirst = np.repeat(np.r_[0, np.cumsum(m)[:-1]], m)
    msize = np.repeat(m, m)
    y_all = np.concatenate(y_list)
    # Blocks of whole patch pairs of about `block_rows` compared distances, so that only one block's
    # log-ratios and sorting temporaries are held at a time (37 million comparisons at 300,000 cells).
    group_rows = np.r_[0, np.cumsum(m)]
    cuts = group_rows[np.searchsorted(group_rows, np.arange(0, group_rows[-1], max(1, block_rows // n_shifts)))]
    bounds = np.unique(np.r_[cuts, group_rows[-1]])
    g_parts, med_parts, mad_parts = [], [], []
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
        key_parts, logr_parts = [], []
        for shift in range(1, n_shifts + 1):
            # larger shifts would repeat pairs in small groups
            u = r0 + np.flatnonzero((msize[r0:r1] > 2 * shift) | (shift == 1))
            v = gfirst[u] + (rank[u] + shift) % msize[u]
            dp = np.linalg.norm(y_all[ra[u]] - y_all[ra[v]], axis=1)
            dq = np.linalg.norm(y_all[rb[u]] - y_all[rb[v]], axis=1)
            ok = (dp > 0) & (dq > 0)
            key_parts.append(key[u[ok]])
            logr_parts.append(np.log(dp[ok]) - np.log(dq[ok]))
        logr = np.concatenate(logr_parts)
        if len(logr):
            g, med, mad, _, _ = _weighted_median_by_group(np.concatenate(key_parts), logr, np.ones(len(logr)))
            g_parts.append(g)
            med_parts.append(med)
            mad_parts.append(mad)
    rel_scale = np.zeros(len(pa))
    disagreement = np.zeros(len(pa))
    if g_parts:
        g, med, mad = np.concatenate(g_parts), np.concatenate(med_parts), np.concatenate(mad_parts)
        where = np.searchsorted(wanted, g)
        pair_key = pa.astype(np.int64) * n_patches + pb
        slot = np.searchsorted(wanted, pair_key)
        found = np.zeros(len(wanted), dtype=bool)
        found[where] = True
        med_all = np.zeros(len(wanted))
        mad_all = np.zeros(len(wanted))
        med_all[where], mad_all[where] = med, mad
        rel_scale = np.where(found[slot], med_all[slot], 0.0)
        disagreement = np.where(found[slot], mad_all[slot], 0.0)
    return rel_scale, disagreement


def checked_patches(patch_indices, patch_coords, n_obs: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate the patches (clear errors naming the patch) and gauge-fix their coordinates."""
    if len(patch_indices) != len(patch_coords) or len(patch_indices) == 0:
        msg = (
            f"`patch_indices` and `patch_coords` must be non-empty lists of equal length; "
            f"got {len(patch_indices)} and {len(patch_coords)}."
        )
        raise ValueError(msg)
    idx_list, y_list = [], []
    for p, (ix, xy) in enumerate(zip(patch_indices, patch_coords, strict=True)):
        ix, xy = checked_patch(p, ix, xy, n_obs, min_points=3, range_error=ValueError)
        if not (xy.max(0) - xy.min(0) > 0).any():
            msg = (
                f"`patch_coords[{p}]` places all {len(xy)} cells at one point: it holds no geometry to stitch. "
                "Drop the patch, or check the model that predicted it."
            )
            raise ValueError(msg)
        idx_list.append(ix)
        y_list.append(gauge_fix(xy))
    covered = np.zeros(n_obs, dtype=bool)
    for ix in idx_list:
        covered[ix] = True
    if not covered.all():
        msg = (
            f"{int((~covered).sum())} of {n_obs} cells are in no patch; increase the patch coverage "
            "so that every cell is predicted at least once."
        )
        raise ValueError(msg)
    return idx_list, y_list


def patch_edge_table(idx_list, y_list, k_edges: int, n_long: int, rng) -> tuple[np.ndarray, ...]:
    """Step 1: within-patch edges in global ids (``i < j``) with their patch and patch-gauge log distance.

    Filled into arrays sized once (32-bit patch and cell ids where they fit), so a million-cell
    table of about 70 million rows is never held twice.
    """
    n_rows = sum(len(ix) * (min(k_edges, len(ix) - 1) + n_long) for ix in idx_list)
    top = max((int(ix.max()) for ix in idx_list), default=0)
    index = index_dtype(max(top, len(idx_list)))
    e_patch = np.empty(n_rows, dtype=index)
    e_i, e_j = np.empty(n_rows, dtype=index), np.empty(n_rows, dtype=index)
    e_logd = np.empty(n_rows)
    at = 0
    for p, (ix, y) in enumerate(zip(idx_list, y_list, strict=True)):
        a, b = _patch_edges(y, k_edges, n_long, rng)
        gi, gj = ix[a], ix[b]
        end = at + len(a)
        e_patch[at:end] = p
        e_i[at:end] = np.minimum(gi, gj)
        e_j[at:end] = np.maximum(gi, gj)
        e_logd[at:end] = np.log(np.maximum(np.linalg.norm(y[a] - y[b], axis=1), 1e-12))
        at = end
    return e_patch[:at], e_i[:at], e_j[:at], e_logd[:at]


@dataclass
class PatchScales:
    log_scale: np.ndarray
    disagreement: np.ndarray
    reliability: np.ndarray
    median_disagreement: float


def patch_scales(idx_list, y_list, n_obs: int, min_shared: int, rng) -> PatchScales:
    """Scale and weigh the patches (steps 2-3): log scales by least squares over overlaps, reliabilities."""
    n_patches = len(idx_list)
    inc = patch_incidence(idx_list, n_obs)
    overlap = sp.triu(inc.T @ inc, k=1).tocoo()
    keep = overlap.data >= min_shared
    pa, pb, n_shared = overlap.row[keep], overlap.col[keep], overlap.data[keep]
    rel_scale, disagreement = _overlap_log_ratios(idx_list, y_list, pa, pb, rng)
    # log s_p - log s_q = -(log d_p - log d_q), i.e. s_p d_p ~ s_q d_q; weighted least squares, mean zero.
    log_scale = np.zeros(n_patches)
    if len(pa):
        rows = np.arange(len(pa))
        wsq = np.sqrt(n_shared.astype(float))
        design = sp.csr_matrix((np.r_[wsq, -wsq], (np.r_[rows, rows], np.r_[pa, pb])), shape=(len(pa), n_patches))
        design = sp.vstack([design, sp.csr_matrix(np.full((1, n_patches), 1.0))])
        rhs = np.r_[-rel_scale * wsq, 0.0]
        log_scale = lsqr(design, rhs, atol=1e-10, btol=1e-10)[0]
    # Per-patch disagreement: overlap-weighted *median* over its partners, so that a clean patch next to
    # one corrupted patch is not blamed for it (the corrupted one disagrees with all of its partners).
    patch_dis = np.full(n_patches, np.nan)
    if len(pa):
        who, med_d, _, _, _ = _weighted_median_by_group(
            np.r_[pa, pb], np.r_[disagreement, disagreement], np.r_[n_shared, n_shared].astype(float)
        )
        patch_dis[who] = med_d
    med_dis = np.nanmedian(patch_dis) if np.isfinite(patch_dis).any() else 0.0
    reliability = np.where(np.isfinite(patch_dis), np.exp(-patch_dis / med_dis) if med_dis > 0 else 1.0, np.exp(-1.0))
    return PatchScales(log_scale, patch_dis, np.clip(reliability, 1e-6, 1.0), float(med_dis))


@dataclass
class EdgeGraph:
    i: np.ndarray
    j: np.ndarray
    dist: np.ndarray
    conf: np.ndarray
    core: np.ndarray  # edges that passed the filters (the initialisation uses only these)
    n_dropped: int
    n_reattached: int


def _edge_statistics(edges, scales: PatchScales, n_obs: int, block_rows: int = 8_000_000) -> list[np.ndarray]:
    """Summarise the measurements of every edge: key, weighted median, dispersion, count, mean reliability.

    Keys are ``i * n_obs + j``, sorted; the statistics are of the edge's scaled log distances and of
    the reliability of the patches that measured it. Computed over blocks of first cells ``i`` of
    about ``block_rows`` measurements each (all measurements of an edge fall in one block), so the
    sorting temporaries stay a fraction of the table at a million cells.
    """
    e_patch, e_i, e_j, e_logd = edges
    n_blocks = max(1, -(-len(e_i) // block_rows))
    step = -(-n_obs // n_blocks)
    block = e_i // step if n_blocks > 1 else None
    parts = []
    for b in range(n_blocks):
        rows = slice(None) if block is None else np.flatnonzero(block == b)
        patch = e_patch[rows]
        if len(patch) == 0:
            continue
        rel = scales.reliability[patch]
        key = e_i[rows] * np.int64(n_obs) + e_j[rows]
        ukey, med, mad, counts, total_rel = _weighted_median_by_group(key, e_logd[rows] + scales.log_scale[patch], rel)
        mean_rel = total_rel / counts  # the weights are the reliabilities
        parts.append((ukey, med, mad, counts, mean_rel))
    if not parts:
        return [np.zeros(0, dtype=np.int64), *(np.zeros(0) for _ in range(4))]
    return [np.concatenate(column) for column in zip(*parts, strict=True)]


def consensus_edges(edges, scales: PatchScales, n_obs: int, max_dispersion: float, min_reliability: float):
    """Step 4: reliability-weighted median per edge, dispersion filter, confidence."""
    reliability = scales.reliability
    ukey, med, mad, counts, mean_rel = _edge_statistics(edges, scales, n_obs)
    # Drop edges that disagree across patches, or that only unreliable patches measured (such edges
    # would otherwise create geodesic shortcuts in the initialisation).
    ok = (mad <= max_dispersion) & (mean_rel >= min_reliability * np.median(reliability))
    # Cells that filtering cut off from the main graph keep their dropped edges (reported), rather than
    # floating free: their positions are then as uncertain as their low confidence says.
    all_i, all_j = (ukey // n_obs).astype(index_dtype(n_obs)), (ukey % n_obs).astype(index_dtype(n_obs))
    del ukey
    kept_graph = sp.coo_matrix((np.ones(int(ok.sum())), (all_i[ok], all_j[ok])), shape=(n_obs, n_obs))
    _, kept_comp = connected_components(kept_graph, directed=False)
    small = np.bincount(kept_comp)[kept_comp] < max(3, 0.01 * n_obs)
    reattach = ~ok & (small[all_i] | small[all_j])
    core = ok[ok | reattach]
    n_dropped = int((~(ok | reattach)).sum())
    ok = ok | reattach
    conf = (1.0 - np.exp(-counts[ok])) * np.exp(-mad[ok] / 0.1) * mean_rel[ok]
    return EdgeGraph(
        i=all_i[ok],
        j=all_j[ok],
        dist=np.exp(med[ok]),
        conf=np.clip(conf, 1e-6, 1.0),
        core=core,
        n_dropped=n_dropped,
        n_reattached=int(small.sum()),
    )
