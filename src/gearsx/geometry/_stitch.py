"""Stitching of overlapping patch geometries into one global layout (see :ref:`gears-reconstruction`).

Written here rather than taken from a library: no maintained package solves sparse,
confidence-weighted distance geometry with per-patch unknown pose and scale at the
scale of a million cells. The pieces are standard — Procrustes-free scale
harmonisation by least squares on log distances, weighted medians, Landmark
Isomap / landmark MDS (de Silva & Tenenbaum) and a Huber stress majorised with
L-BFGS — and everything is sparse and ``O(edges)``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lsqr
from scipy.spatial import cKDTree

from gearsx._utils import as_rng, check_coords, check_positive_int

from ._gauge import gauge_fix

__all__ = ["StitchResult", "stitch_patches"]

logger = logging.getLogger(__name__)


@dataclass
class StitchResult:
    """Result of :func:`~gearsx.geometry.stitch_patches`.

    Attributes
    ----------
    X
        Global 2-D layout, ``(n_obs, 2)``, centred with unit RMS norm.
    distances
        Symmetric CSR matrix of stitched distances (in the units of ``X``).
    weights
        Symmetric CSR matrix of the edges' confidence weights in ``(0, 1]``.
    diagnostics
        ``patch_reliability``, ``patch_disagreement`` (per patch), ``overlap_disagreement``
        (median), ``solver_stress`` (normalised stress of ``X`` on the stitched edges),
        ``edge_residual_quantiles`` (of ``|log(d_X / d_stitched)|`` at 0.5, 0.9, 0.99),
        ``n_edges``, ``n_components`` and ``components`` (component label per cell).
    """

    X: np.ndarray
    distances: sp.csr_matrix
    weights: sp.csr_matrix
    diagnostics: dict = field(default_factory=dict)


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


def _sort_within_groups(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Order by ``group``, then by ``values`` (``np.lexsort((values, group))``, about twice as fast on 10^7 rows)."""
    by_value = np.argsort(values)
    return by_value[np.argsort(group[by_value], kind="stable")]


def _weighted_median_by_group(group: np.ndarray, values: np.ndarray, weights: np.ndarray):
    """Weighted median, weighted mean absolute deviation and count of ``values`` per ``group`` (vectorised)."""
    order = _sort_within_groups(group, values)
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
    return g[starts], med, mad, counts


def _overlap_log_ratios(idx_list, y_list, pa, pb, rng, max_cells: int = 64, n_shifts: int = 8):
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
    order = _sort_within_groups(key, rng.random(len(key)))
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
    u_parts, v_parts = [], []
    for shift in range(1, n_shifts + 1):
        ok = (msize > 2 * shift) | (shift == 1)  # larger shifts would repeat pairs in small groups
        u = np.flatnonzero(ok)
        v = gfirst[u] + (rank[u] + shift) % msize[u]
        u_parts.append(u)
        v_parts.append(v)
    u = np.concatenate(u_parts) if u_parts else np.zeros(0, dtype=np.int64)
    v = np.concatenate(v_parts) if v_parts else np.zeros(0, dtype=np.int64)
    dp = np.linalg.norm(y_all[ra[u]] - y_all[ra[v]], axis=1)
    dq = np.linalg.norm(y_all[rb[u]] - y_all[rb[v]], axis=1)
    ok = (dp > 0) & (dq > 0)
    logr = np.log(dp[ok]) - np.log(dq[ok])
    rel_scale = np.zeros(len(pa))
    disagreement = np.zeros(len(pa))
    if len(logr):
        g, med, mad, _ = _weighted_median_by_group(key[u[ok]], logr, np.ones(len(logr)))
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


def _landmark_isomap(dist: sp.csr_matrix, n_landmarks: int, rng: np.random.Generator) -> np.ndarray:
    """Landmark Isomap: graph geodesics from landmarks, classical MDS on them, triangulation of the rest."""
    from scipy.sparse.csgraph import dijkstra

    n = dist.shape[0]
    m = min(n_landmarks, n)
    landmarks = [int(rng.integers(n))]
    geo = np.empty((m, n))
    geo[0] = dijkstra(dist, indices=landmarks[0])
    mind = geo[0].copy()
    for t in range(1, m):  # farthest-point landmarks in geodesic distance
        nxt = int(np.argmax(np.where(np.isfinite(mind), mind, -1)))
        landmarks.append(nxt)
        geo[t] = dijkstra(dist, indices=nxt)
        mind = np.minimum(mind, geo[t])
    geo[~np.isfinite(geo)] = np.nanmax(geo[np.isfinite(geo)]) if np.isfinite(geo).any() else 0.0
    d2 = geo[:, landmarks] ** 2
    j = np.eye(m) - 1.0 / m
    b = -0.5 * j @ d2 @ j
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:2]
    vals, vecs = np.clip(vals[top], 1e-12, None), vecs[:, top]
    # de Silva & Tenenbaum: x = -1/2 L# (delta_x - mean_delta), L# = V / sqrt(lambda).
    pinv = (vecs / np.sqrt(vals)).T
    return (-0.5 * pinv @ (geo**2 - d2.mean(1, keepdims=True))).T


def _initial_layout(sub: sp.csr_matrix, ci, cj, cd, n_landmarks: int, rng: np.random.Generator) -> np.ndarray:
    """Initialise a component's layout.

    Landmark Isomap on the largest component of the trusted (core) edges; other cells start at
    the mean position of their already-placed neighbours (reattached cells never shortcut geodesics).
    """
    m = sub.shape[0]
    core = sp.coo_matrix((cd, (ci, cj)), shape=(m, m)).tocsr()
    core = core + core.T
    _, cc = connected_components(core, directed=False)
    main = np.flatnonzero(cc == np.bincount(cc).argmax())
    x0 = np.full((m, 2), np.nan)
    x0[main] = (
        _landmark_isomap(core[main][:, main], n_landmarks, rng) if len(main) > 2 else rng.normal(size=(len(main), 2))
    )
    adj = (sub > 0).astype(float).tocsr()
    for _ in range(m):
        todo = np.isnan(x0[:, 0])
        if not todo.any():
            break
        placed = (~todo).astype(float)
        total = adj @ np.nan_to_num(x0)
        cnt = adj @ placed
        fill = todo & (cnt > 0)
        if not fill.any():
            break
        x0[fill] = total[fill] / cnt[fill, None]
    todo = np.isnan(x0[:, 0])
    x0[todo] = np.nanmean(x0, axis=0) + rng.normal(scale=1e-3, size=(int(todo.sum()), 2))
    return x0


def _huber_stress_solve(
    x0, i, j, d, w, *, delta: float, anchor: float, max_iter: int, residual: str = "absolute"
) -> np.ndarray:
    """Minimise mean_cells [sum w huber((|x_i - x_j| - d) / u)] / mean w + anchor * mean |x - x0|^2 with L-BFGS.

    ``u`` is the median edge length (``residual='absolute'``, Kruskal's stress) or ``d`` itself
    (``'relative'``). The objective is a per-cell average, so its gradient per coordinate does
    not shrink with the number of cells (L-BFGS-B's gradient tolerance stopped a 100,000-cell
    solve after 3 iterations when it was normalised by the total weight). ``O(edges)`` per step.
    """
    from scipy.optimize import minimize

    n = len(x0)
    u = d if residual == "relative" else np.full_like(d, np.median(d))
    wu = w / u * (n / w.sum())  # per-edge factor of the gradient
    wl = w * (n / w.sum()) / n  # per-edge factor of the loss (mean over cells)

    def fun(flat):
        x = flat.reshape(n, 2)
        diff = x[i] - x[j]
        dist = np.sqrt(np.einsum("ec,ec->e", diff, diff) + 1e-18)
        r = (dist - d) / u
        ar = np.abs(r)
        loss = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
        coef = (wu * np.clip(r, -delta, delta) / dist / n)[:, None] * diff  # huber'(r) = clip(r)
        grad = np.column_stack([np.bincount(i, coef[:, c], n) - np.bincount(j, coef[:, c], n) for c in range(2)])
        an = x - x0
        f = float(wl @ loss + anchor * np.einsum("ec,ec->", an, an) / n)
        grad += 2 * anchor * an / n
        return f * n, grad.ravel() * n

    res = minimize(fun, x0.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x.reshape(n, 2)


def stitch_patches(
    patch_indices: list[np.ndarray],
    patch_coords: list[np.ndarray],
    n_obs: int,
    *,
    k_edges: int = 10,
    n_long: int = 2,
    min_shared: int = 5,
    max_dispersion: float = 0.5,
    min_reliability: float = 0.1,
    huber_delta: float = 0.1,
    residual: str = "absolute",
    anchor: float = 1e-3,
    n_landmarks: int = 64,
    max_iter: int = 150,
    random_state=0,
) -> StitchResult:
    """Stitch overlapping patch geometries into one global 2-D layout.

    Each patch is a set of global cell indices with that patch's predicted 2-D
    coordinates, in an arbitrary pose and scale. The steps (see :ref:`gears-reconstruction`):

    1. Gauge-fix every patch (centre, unit RMS) and extract its edge set: kNN in the
       patch geometry (``k_edges``) plus ``n_long`` random longer-range edges per cell.
    2. Harmonise patch scales: for every pair of patches sharing at least
       ``min_shared`` cells, the median log-ratio of their distances between shared
       cells; per-patch log scales by sparse least squares (mean zero).
    3. Patch reliability ``a_p = exp(-disagreement_p / median disagreement)``, where the
       disagreement of two patches is the mean ``|log d_p - log d_q|`` over their shared
       pairs (after scale harmonisation), and a patch's disagreement is the
       overlap-weighted median over its partners (robust to a corrupted neighbour).
    4. Aggregate each edge measured by several patches with a reliability-weighted
       median of log distances; drop edges whose weighted dispersion (mean absolute
       deviation of log distances) exceeds ``max_dispersion`` or whose patches are
       unreliable (``min_reliability``); confidence
       ``(1 - exp(-count)) exp(-dispersion / 0.1)`` times the mean reliability.
    5. Landmark Isomap initialisation on the stitched graph, then a weighted Huber
       stress solve (residuals in units of the median edge length, threshold
       ``huber_delta``) with a small anchor to the initialisation.

    Disconnected stitched graphs are not collapsed: each connected component is
    solved on its own, components are laid side by side, a warning is emitted and
    the labels are reported in ``diagnostics['components']``.

    Parameters
    ----------
    patch_indices
        One integer array of global cell indices per patch (no repeats within a patch).
    patch_coords
        One ``(len(indices), 2)`` coordinate array per patch.
    n_obs
        Number of cells; every cell must be in at least one patch.
    k_edges, n_long
        Within-patch edge set.
    min_shared
        Minimum number of shared cells for two patches to be compared.
    max_dispersion
        Edges whose measurements disagree more (in log units) are dropped.
    min_reliability
        Edges whose measuring patches have a mean reliability below this fraction of
        the median patch reliability are dropped.
    huber_delta
        Huber threshold on the distance residuals (in the units set by ``residual``).
    residual
        ``'absolute'``: residuals ``d_X - d`` in units of the median stitched edge length
        (Kruskal's stress: long edges weigh as much as short ones); ``'relative'``:
        ``(d_X - d) / d``, which fits short edges more tightly. Predicted short distances are
        the least reliable part of a patch: on the simulator's 10,000 cells with a trained
        model the relative solve lowered Spearman below its own initialisation (0.717 ->
        0.696) while the absolute one raised it (0.724) and halved the sliced Wasserstein
        distance.
    anchor
        Weight of the anchor to the Landmark Isomap initialisation.
    n_landmarks
        Landmarks of the initialisation.
    max_iter
        L-BFGS iterations of the stress solve.
    random_state
        Seed of the long-range edges and of the landmarks.

    Returns
    -------
    :class:`StitchResult`

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import stitch_patches
    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(size=(400, 2))
    >>> idx = [np.flatnonzero(xy[:, 0] < 0.6), np.flatnonzero(xy[:, 0] > 0.4)]
    >>> res = stitch_patches(idx, [xy[i] * 5 for i in idx], 400)
    >>> res.X.shape
    (400, 2)
    """
    n_obs = check_positive_int(n_obs, name="n_obs", minimum=3)
    if residual not in ("absolute", "relative"):
        msg = f"`residual` must be 'absolute' or 'relative'; got {residual!r}."
        raise ValueError(msg)
    idx_list, y_list = _checked_patches(patch_indices, patch_coords, n_obs)
    rng = as_rng(random_state)
    edges = _patch_edge_table(idx_list, y_list, k_edges, n_long, rng)
    scales = _patch_scales(idx_list, y_list, n_obs, min_shared, rng)
    graph = _consensus_edges(edges, scales, n_obs, max_dispersion, min_reliability)
    x, comp = _solve_components(
        graph,
        n_obs,
        rng,
        n_landmarks=n_landmarks,
        delta=huber_delta,
        anchor=anchor,
        max_iter=max_iter,
        residual=residual,
    )
    # Express the result (and the stitched distances) in the unit-RMS gauge.
    centre = x.mean(0)
    rms = np.sqrt(((x - centre) ** 2).sum(1).mean()) or 1.0
    x = (x - centre) / rms
    # Stitched distances are defined up to a global scale: match them to X by least squares on the edges.
    ei, ej, dist, conf = graph.i, graph.j, graph.dist, graph.conf
    d_x = np.linalg.norm(x[ei] - x[ej], axis=1)
    dist = dist * float((d_x * dist).sum() / max((dist * dist).sum(), 1e-300))
    resid = np.abs(np.log(np.maximum(d_x, 1e-12) / np.maximum(dist, 1e-12)))
    stress = float(np.sqrt(((d_x - dist) ** 2 * conf).sum() / max((dist**2 * conf).sum(), 1e-300)))

    def sym(values: np.ndarray) -> sp.csr_matrix:
        m = sp.coo_matrix((values, (ei, ej)), shape=(n_obs, n_obs))
        return (m + m.T).tocsr()

    n_comp = int(comp.max()) + 1
    diagnostics = {
        "patch_reliability": scales.reliability,
        "patch_disagreement": np.nan_to_num(scales.disagreement, nan=-1.0),
        "patch_log_scale": scales.log_scale,
        "overlap_disagreement": scales.median_disagreement,
        "solver_stress": stress,
        "edge_residual_quantiles": dict(
            zip(("q50", "q90", "q99"), np.quantile(resid, [0.5, 0.9, 0.99]).tolist(), strict=True)
        )
        if len(resid)
        else {},
        "n_edges": int(len(dist)),
        "n_edges_dropped": graph.n_dropped,
        "n_cells_reattached": graph.n_reattached,
        "n_patches": len(idx_list),
        "n_components": n_comp,
        "components": comp.astype(np.int64),
    }
    logger.info("stitched %d patches: %d edges, stress %.3f, %d components", len(idx_list), len(dist), stress, n_comp)
    return StitchResult(X=x, distances=sym(dist), weights=sym(conf), diagnostics=diagnostics)


def _checked_patches(patch_indices, patch_coords, n_obs: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate the patches (clear errors naming the patch) and gauge-fix their coordinates."""
    if len(patch_indices) != len(patch_coords) or len(patch_indices) == 0:
        msg = (
            f"`patch_indices` and `patch_coords` must be non-empty lists of equal length; "
            f"got {len(patch_indices)} and {len(patch_coords)}."
        )
        raise ValueError(msg)
    idx_list, y_list = [], []
    for p, (ix, xy) in enumerate(zip(patch_indices, patch_coords, strict=True)):
        ix = np.asarray(ix, dtype=np.int64)
        xy = check_coords(xy, name=f"patch_coords[{p}]", min_points=3, n_dims=2)
        if ix.ndim != 1 or len(ix) != len(xy):
            msg = f"Patch {p}: {len(ix)} indices for {len(xy)} coordinate rows; they must match."
            raise ValueError(msg)
        if ix.min() < 0 or ix.max() >= n_obs:
            msg = f"Patch {p} holds cell indices outside [0, n_obs={n_obs})."
            raise ValueError(msg)
        if len(np.unique(ix)) != len(ix):
            msg = f"Patch {p} repeats a cell index; each cell may appear once per patch."
            raise ValueError(msg)
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


def _patch_edge_table(idx_list, y_list, k_edges: int, n_long: int, rng) -> tuple[np.ndarray, ...]:
    """Step 1: within-patch edges in global ids (``i < j``) with their patch and patch-gauge log distance."""
    e_patch, e_i, e_j, e_logd = [], [], [], []
    for p, (ix, y) in enumerate(zip(idx_list, y_list, strict=True)):
        a, b = _patch_edges(y, k_edges, n_long, rng)
        gi, gj = ix[a], ix[b]
        swap = gi > gj
        gi, gj = np.where(swap, gj, gi), np.where(swap, gi, gj)
        e_patch.append(np.full(len(a), p))
        e_i.append(gi)
        e_j.append(gj)
        e_logd.append(np.log(np.maximum(np.linalg.norm(y[a] - y[b], axis=1), 1e-12)))
    return tuple(map(np.concatenate, (e_patch, e_i, e_j, e_logd)))


@dataclass
class _PatchScales:
    log_scale: np.ndarray
    disagreement: np.ndarray
    reliability: np.ndarray
    median_disagreement: float


def _patch_scales(idx_list, y_list, n_obs: int, min_shared: int, rng) -> _PatchScales:
    """Scale and weigh the patches (steps 2-3): log scales by least squares over overlaps, reliabilities."""
    n_patches = len(idx_list)
    inc = sp.csr_matrix(
        (
            np.ones(sum(map(len, idx_list))),
            (np.concatenate(idx_list), np.repeat(np.arange(n_patches), [len(i) for i in idx_list])),
        ),
        shape=(n_obs, n_patches),
    )
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
        who, med_d, _, _ = _weighted_median_by_group(
            np.r_[pa, pb], np.r_[disagreement, disagreement], np.r_[n_shared, n_shared].astype(float)
        )
        patch_dis[who] = med_d
    med_dis = np.nanmedian(patch_dis) if np.isfinite(patch_dis).any() else 0.0
    reliability = np.where(np.isfinite(patch_dis), np.exp(-patch_dis / med_dis) if med_dis > 0 else 1.0, np.exp(-1.0))
    return _PatchScales(log_scale, patch_dis, np.clip(reliability, 1e-6, 1.0), float(med_dis))


@dataclass
class _EdgeGraph:
    i: np.ndarray
    j: np.ndarray
    dist: np.ndarray
    conf: np.ndarray
    core: np.ndarray  # edges that passed the filters (the initialisation uses only these)
    n_dropped: int
    n_reattached: int


def _consensus_edges(edges, scales: _PatchScales, n_obs: int, max_dispersion: float, min_reliability: float):
    """Step 4: reliability-weighted median per edge, dispersion filter, confidence."""
    e_patch, e_i, e_j, e_logd = edges
    reliability = scales.reliability
    key = e_i * np.int64(n_obs) + e_j
    vals = e_logd + scales.log_scale[e_patch]
    ukey, med, mad, counts = _weighted_median_by_group(key, vals, reliability[e_patch])
    mean_rel = np.bincount(np.searchsorted(ukey, key), reliability[e_patch], len(ukey)) / counts
    # Drop edges that disagree across patches, or that only unreliable patches measured (such edges
    # would otherwise create geodesic shortcuts in the initialisation).
    ok = (mad <= max_dispersion) & (mean_rel >= min_reliability * np.median(reliability))
    # Cells that filtering cut off from the main graph keep their dropped edges (reported), rather than
    # floating free: their positions are then as uncertain as their low confidence says.
    all_i, all_j = ukey // n_obs, ukey % n_obs
    kept_graph = sp.coo_matrix((np.ones(int(ok.sum())), (all_i[ok], all_j[ok])), shape=(n_obs, n_obs))
    _, kept_comp = connected_components(kept_graph, directed=False)
    small = np.bincount(kept_comp)[kept_comp] < max(3, 0.01 * n_obs)
    reattach = ~ok & (small[all_i] | small[all_j])
    core = ok[ok | reattach]
    n_dropped = int((~(ok | reattach)).sum())
    ok = ok | reattach
    conf = (1.0 - np.exp(-counts[ok])) * np.exp(-mad[ok] / 0.1) * mean_rel[ok]
    return _EdgeGraph(
        i=all_i[ok],
        j=all_j[ok],
        dist=np.exp(med[ok]),
        conf=np.clip(conf, 1e-6, 1.0),
        core=core,
        n_dropped=n_dropped,
        n_reattached=int(small.sum()),
    )


def _solve_components(graph: _EdgeGraph, n_obs: int, rng, **solve) -> tuple[np.ndarray, np.ndarray]:
    """Step 5: Landmark Isomap start and Huber stress solve per connected component, laid side by side."""
    ei, ej, dist, conf, core = graph.i, graph.j, graph.dist, graph.conf, graph.core
    adjacency = sp.coo_matrix((dist, (ei, ej)), shape=(n_obs, n_obs)).tocsr()
    adjacency = adjacency + adjacency.T
    n_comp, comp = connected_components(adjacency, directed=False)
    if n_comp > 1:
        sizes = np.bincount(comp)
        warnings.warn(
            f"The stitched graph has {n_comp} connected components (sizes {sorted(sizes.tolist(), reverse=True)[:10]}); "
            "each is solved separately and laid out side by side. Increase patch overlap to connect them.",
            UserWarning,
            stacklevel=3,
        )
    n_landmarks = solve.pop("n_landmarks")
    x = np.zeros((n_obs, 2))
    offset = 0.0
    for c in range(n_comp):
        cells = np.flatnonzero(comp == c)
        if len(cells) == 1:
            x[cells] = [offset, 0.0]
            offset += 1.0
            continue
        sub = adjacency[cells][:, cells]
        local = np.full(n_obs, -1)
        local[cells] = np.arange(len(cells))
        sel = comp[ei] == c
        x0 = _initial_layout(sub, local[ei[sel & core]], local[ej[sel & core]], dist[sel & core], n_landmarks, rng)
        xi = _huber_stress_solve(x0, local[ei[sel]], local[ej[sel]], dist[sel], conf[sel], **solve)
        xi = xi - xi.mean(0)
        x[cells] = xi + [offset - xi[:, 0].min(), 0.0]
        offset = x[cells, 0].max() + 0.1 * np.ptp(xi[:, 0]) + 1.0
    return x, comp
