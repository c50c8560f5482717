"""Stitching by communities: independent stitches of groups of patches, then one alignment of the groups.

Used by :func:`gearsx.geometry.stitch_patches` when ``n_communities`` is given (see :doc:`/scaling`):
each community is a self-contained stitch (a task on a dask cluster, or a step of a loop in process), so
the largest problem any process solves is one community's, and the communities are put together by a
small linear least-squares problem on the cells they share.

Written here rather than taken from a library: the alignment is the 2-D similarity synchronisation of
overlapping point sets (each layout known up to rotation, reflection, scale and translation), which is
a few lines of sparse linear algebra once the reflections are fixed; no maintained package offers it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, dijkstra, minimum_spanning_tree

from ._cover import patch_incidence
from ._gauge import procrustes

if TYPE_CHECKING:
    from ._stitch import StitchResult

__all__ = ["align_communities", "patch_communities", "stitch_by_communities"]


def _patch_graph(idx_list: list[np.ndarray], n_obs: int, min_shared: int) -> sp.csr_matrix:
    """Patches x patches: the number of cells two patches share, where it is at least ``min_shared``."""
    inc = patch_incidence(idx_list, n_obs)
    shared = (inc.T @ inc).tocsr()
    shared.setdiag(0)
    shared.data[shared.data < min_shared] = 0
    shared.eliminate_zeros()
    return shared


def patch_communities(
    idx_list: list[np.ndarray],
    n_obs: int,
    n_communities: int,
    *,
    min_shared: int = 5,
    random_state: int = 0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group patches into ``n_communities`` connected communities of overlapping patches.

    The patches overlap like the tissue they come from, so the graph of patches that share at least
    ``min_shared`` cells is a coarse picture of the tissue. Its seeds are spread by farthest-point
    sampling in hops (a component of the graph without a seed gets one, even beyond
    ``n_communities``), and every patch joins its nearest seed: a Voronoi partition of the patch graph,
    so each community is connected. Two neighbouring communities share the cells that patches of both
    cover (the patch cover of :func:`gearsx.tl.reconstruct` puts every cell in at least two patches),
    which is what aligns them. A halo of the neighbouring patches was tried and dropped: patches drawn by random walks in
    expression space overlap widely, and one ring of them made each of 8 communities of 100,000 cells
    hold 36,000-80,000 cells.

    Returns the community of every patch and, per community, the indices of its patches.
    """
    n_p = len(idx_list)
    graph = _patch_graph(idx_list, n_obs, min_shared)
    rng = np.random.default_rng(random_state)
    seeds = [int(rng.integers(n_p))]
    nearest = dijkstra(graph, directed=False, indices=seeds[0], unweighted=True)
    while True:
        # farthest patch from every seed; unreachable ones (another component of the graph) come first
        nxt = int(np.argmax(nearest))
        if nearest[nxt] == 0 or (len(seeds) >= n_communities and np.isfinite(nearest[nxt])):
            break
        seeds.append(nxt)
        nearest = np.minimum(nearest, dijkstra(graph, directed=False, indices=nxt, unweighted=True))
    _, _, sources = dijkstra(
        graph, directed=False, indices=seeds, unweighted=True, min_only=True, return_predecessors=True
    )
    order = np.argsort(seeds)
    home = order[np.searchsorted(np.asarray(seeds)[order], sources)]  # community = position of its seed in `seeds`
    return home, [np.flatnonzero(home == g) for g in range(len(seeds))]


def _reflection_sign(a: np.ndarray, b: np.ndarray) -> float:
    """+1 when ``b`` maps onto ``a`` by a proper similarity (rotation), -1 when it needs a reflection."""
    return float(np.sign(np.linalg.det(procrustes(b - b.mean(0), a - a.mean(0)))) or 1.0)


def align_communities(
    layouts: list[np.ndarray], cells: list[np.ndarray], n_obs: int
) -> tuple[np.ndarray, np.ndarray, list[complex], list[complex]]:
    """Put community layouts (each in its own pose and scale) into one frame and average them per cell.

    ``cells[g]`` holds the sorted, unique global indices of the cells of ``layouts[g]``.

    Every layout ``g`` is written as complex numbers ``z_g`` and mapped by ``c_g * z_g + t_g`` (``c_g``:
    rotation and scale, ``t_g``: translation), after mirroring the layouts that need it. The
    reflections come first: the sign of the best orthogonal map between two overlapping communities,
    propagated along the spanning tree of largest overlaps from the first. Then ``c`` and ``t`` of all
    communities minimise, over every cell two communities share, the squared distance between its two
    mapped positions, with ``c_0 = 1, t_0 = 0``: a linear least-squares problem with two unknowns per
    community (one such gauge per group of communities linked by shared cells; groups sharing no cells
    are laid side by side, with a warning). Each cell's position is the mean of its mapped positions.

    Returns the positions, the number of communities holding each cell, and the maps ``c`` and ``t``.
    """
    n_g = len(layouts)
    membership = patch_incidence(cells, n_obs)
    overlap = sp.triu(membership.T @ membership, k=1).tocoo()
    shared = {}  # (g, h) -> positions of the shared cells in cells[g] and in cells[h] (both sorted)
    for g, h, v in zip(overlap.row.tolist(), overlap.col.tolist(), overlap.data.tolist(), strict=True):
        if v >= 3:
            _, in_g, in_h = np.intersect1d(cells[g], cells[h], assume_unique=True, return_indices=True)
            shared[(g, h)] = (in_g, in_h)
    # reflections: along the maximum-overlap spanning tree
    weight = sp.coo_matrix(
        ([-float(len(s[0])) for s in shared.values()], ([k[0] for k in shared], [k[1] for k in shared])),
        shape=(n_g, n_g),
    )
    tree = minimum_spanning_tree(weight.tocsr()).tocoo()
    tree_sym = sp.coo_matrix(
        (np.ones(2 * tree.nnz), (np.r_[tree.row, tree.col], np.r_[tree.col, tree.row])), shape=(n_g, n_g)
    ).tocsr()
    _, group = connected_components(tree_sym, directed=False)
    flip = np.ones(n_g)
    seen = np.zeros(n_g, dtype=bool)
    for root in range(n_g):
        if seen[root]:
            continue
        order, pred = breadth_first_order(tree_sym, root, directed=False)
        seen[order] = True
        for node in order[1:]:
            p = int(pred[node])
            in_p, in_node = shared[(p, node)] if p < node else shared[(node, p)][::-1]
            sign = _reflection_sign(layouts[p][in_p], layouts[node][in_node])
            flip[node] = flip[p] * sign
    z = [(lay[:, 0] + 1j * flip[g] * lay[:, 1]) for g, lay in enumerate(layouts)]
    # similarity maps: rows c_g z_gi + t_g - c_h z_hi - t_h = 0 over shared cells; unknowns [c_0..c_G-1, t_0..t_G-1]
    rows, cols, vals = [], [], []
    r = 0
    for (g, h), (in_g, in_h) in shared.items():
        m = len(in_g)
        idx = np.arange(r, r + m)
        rows += [idx, idx, idx, idx]
        cols += [np.full(m, g), np.full(m, n_g + g), np.full(m, h), np.full(m, n_g + h)]
        vals += [z[g][in_g], np.ones(m), -z[h][in_h], -np.ones(m)]
        r += m
    x = np.zeros(2 * n_g, dtype=complex)
    x[:n_g] = 1.0
    if r:
        a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, 2 * n_g))
        fixed = np.zeros(2 * n_g, dtype=bool)
        for c in np.unique(group):  # one gauge per group of connected communities
            first = int(np.flatnonzero(group == c)[0])
            fixed[[first, n_g + first]] = True
        free = ~fixed
        rhs = -(a[:, fixed] @ x[fixed])
        af = a[:, free]
        normal = (af.conj().T @ af).toarray()
        x[free] = np.linalg.lstsq(normal, af.conj().T @ rhs, rcond=None)[0]
    c, t = x[:n_g], x[n_g:]
    total = np.zeros(n_obs, dtype=complex)
    count = np.zeros(n_obs)
    for g in range(n_g):
        total[cells[g]] += c[g] * z[g] + t[g]
        count[cells[g]] += 1
    pos = total / np.maximum(count, 1)
    xy = np.c_[pos.real, pos.imag]
    if group.max() > 0:  # communities sharing no cells: lay their groups side by side, as disconnected components
        warnings.warn(
            f"The communities form {group.max() + 1} groups that share no cells; each group is laid out "
            "separately, side by side. Increase patch overlap to connect them.",
            UserWarning,
            stacklevel=4,
        )
        cell_group = np.full(n_obs, -1)
        for g in range(n_g):
            cell_group[cells[g]] = group[g]
        offset = 0.0
        for k in range(group.max() + 1):
            sel = cell_group == k
            part = xy[sel] - xy[sel].mean(0)
            xy[sel] = part + [offset - part[:, 0].min(), 0.0]
            offset = xy[sel, 0].max() + 0.1 * np.ptp(part[:, 0]) + 1.0
    return xy, count, list(c), list(t)


def _stitch_one(idx: list[np.ndarray], ys: list[np.ndarray], n: int, seed: int, kw: dict) -> StitchResult:
    """One community's stitch, with the linear algebra on one thread.

    Dask workers run BLAS on one thread (``OMP_NUM_THREADS=1``), and a multi-threaded BLAS sums in
    another order: on 100,000 cells the layouts of the two executors differed by 2% of their spread.
    Limiting BLAS to one thread here, wherever the task runs, keeps them identical.
    """
    from threadpoolctl import threadpool_limits

    from ._stitch import stitch_patches

    with threadpool_limits(limits=1):
        return stitch_patches(idx, ys, n, random_state=seed, **kw)


def stitch_by_communities(
    idx_list: list[np.ndarray],
    y_list: list[np.ndarray],
    n_obs: int,
    *,
    n_communities: int,
    min_shared: int,
    random_state: int,
    client: Any = None,
    **stitch_kw,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict]:
    """Stitch each community on its own (in process or as tasks on ``client``), then align them.

    Every community's stitch is seeded by ``random_state`` and its position, so a cluster and this
    process give the same layout. Returns the layout, the stitched edges ``(i, j, distance, weight)``
    with ``i < j`` (each community's in the common frame, averaged where communities overlap) and the
    diagnostics of the step.
    """
    _, members = patch_communities(idx_list, n_obs, n_communities, min_shared=min_shared, random_state=random_state)
    seeds = np.random.SeedSequence(random_state).spawn(len(members))
    jobs = []
    for g, pats in enumerate(members):
        cells = np.unique(np.concatenate([idx_list[p] for p in pats]))
        jobs.append(
            (
                cells,
                [np.searchsorted(cells, idx_list[p]) for p in pats],  # local indices: cells is sorted
                [y_list[p] for p in pats],
                int(seeds[g].generate_state(1)[0]),
            )
        )

    kw = {"min_shared": min_shared, **stitch_kw}
    if client is None:
        results: list[StitchResult] = [_stitch_one(j[1], j[2], len(j[0]), j[3], kw) for j in jobs]
    else:
        futures = [client.submit(_stitch_one, j[1], j[2], len(j[0]), j[3], kw, pure=False) for j in jobs]
        results = client.gather(futures)
    cells = [j[0] for j in jobs]
    x, count, c, _ = align_communities([res.X for res in results], cells, n_obs)
    # merge the stitched graphs in the common frame (a community's distances scale by |c_g|), one entry per
    # edge (i < j: the local order is the global one), averaged where communities overlap
    di, dj, dd, dw = [], [], [], []
    for g, res in enumerate(results):
        d = sp.triu(res.distances, k=1).tocoo()
        w = sp.triu(res.weights, k=1).tocoo()  # the same edges, in the same order
        di.append(cells[g][d.row])
        dj.append(cells[g][d.col])
        dd.append(d.data * abs(c[g]))
        dw.append(w.data)
    key = np.concatenate(di).astype(np.int64) * n_obs + np.concatenate(dj)
    edge, which = np.unique(key, return_inverse=True)  # sorted by (i, j)
    times = np.bincount(which)
    edges = (
        edge // n_obs,
        edge % n_obs,
        np.bincount(which, np.concatenate(dd)) / times,
        np.bincount(which, np.concatenate(dw)) / times,
    )
    n_p = len(idx_list)
    reliability = np.zeros(n_p)
    disagreement = np.zeros(n_p)
    for pats, res in zip(members, results, strict=True):
        reliability[pats] = res.diagnostics["patch_reliability"]
        disagreement[pats] = res.diagnostics["patch_disagreement"]
    diag = {
        "patch_reliability": reliability,
        "patch_disagreement": disagreement,
        "overlap_disagreement": float(np.median([r.diagnostics["overlap_disagreement"] for r in results])),
        "n_communities": len(members),
        "community_sizes": [int(len(cl)) for cl in cells],
        "community_stress": [float(r.diagnostics["solver_stress"]) for r in results],
        "n_edges_dropped": int(sum(r.diagnostics["n_edges_dropped"] for r in results)),
        "n_cells_reattached": int(sum(r.diagnostics["n_cells_reattached"] for r in results)),
        "median_communities_per_cell": float(np.median(count)),
    }
    return x, edges, diag
