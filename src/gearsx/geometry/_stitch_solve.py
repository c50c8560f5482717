"""Stitching, step 2: one layout from the consensus graph (see :ref:`gears-reconstruction`).

Landmark Isomap for the start, then a Huber stress majorised with L-BFGS, per connected component.
Used by :func:`gearsx.geometry.stitch_patches`.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from gearsx._utils import index_dtype

from ._compiled import compiled
from ._order import morton_order, sort_within_groups

if TYPE_CHECKING:
    from ._stitch_scales import EdgeGraph

__all__ = ["solve_components"]

#: Above this many cells the solve works in a spatially local cell order (:func:`_local_order`) and the
#: start's geodesics follow each cell's shortest edges (:func:`_shortest_edges`). Both pay only at scale,
#: where the layout no longer fits in the processor's cache and the landmarks' shortest paths dominate
#: the start; below it they would move the layouts (in the last bits) for no gain in time.
LARGE_GRAPH = 50_000
#: Edges per cell kept for the start's geodesics above :data:`LARGE_GRAPH` cells.
GEODESIC_EDGES = 10
#: Above :data:`LARGE_GRAPH` cells the stress and its gradient are summed over this many consecutive
#: blocks of edges, each in its own thread with its own gradient buffer (the compiled loop releases the
#: GIL). A fixed count, not the number of cores, so that the layout is the same on any machine.
EDGE_BLOCKS = 2


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

    Landmark Isomap on the largest component of the trusted (core) edges (above
    :data:`LARGE_GRAPH` cells, on each cell's :data:`GEODESIC_EDGES` shortest); other cells start at
    the mean position of their already-placed neighbours (reattached cells never shortcut geodesics).
    """
    m = sub.shape[0]
    core = sp.coo_matrix((cd, (ci, cj)), shape=(m, m)).tocsr()
    core = core + core.T
    _, cc = connected_components(core, directed=False)
    main = np.flatnonzero(cc == np.bincount(cc).argmax())
    x0 = np.full((m, 2), np.nan)
    if len(main) > 2:
        geodesic = core[main][:, main]
        if len(main) > LARGE_GRAPH:
            geodesic = _shortest_edges(geodesic, GEODESIC_EDGES)
        x0[main] = _landmark_isomap(geodesic, n_landmarks, rng)
        del geodesic
    else:
        x0[main] = rng.normal(size=(len(main), 2))
    adj = None
    for _ in range(m):
        todo = np.isnan(x0[:, 0])
        if not todo.any():
            break
        if adj is None:
            adj = (sub > 0).astype(float).tocsr()
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


def _shortest_per_row(indptr, data, k, keep):  # pragma: no cover - compiled by numba
    """Mark the ``k`` smallest entries of every CSR row in ``keep``."""
    for r in range(len(indptr) - 1):
        a, b = indptr[r], indptr[r + 1]
        if b - a <= k:
            keep[a:b] = True
        else:
            for t in np.argsort(data[a:b])[:k]:
                keep[a + t] = True


def _shortest_edges(dist: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep every cell's ``k`` shortest edges (an edge stays when it is among either end's ``k``).

    The stitched graph carries about 40 edges per cell (every patch that holds two cells measures
    their distance once). Shortest paths from the landmarks need far fewer: on a 300,000-cell
    simulated section, the 10 shortest per cell (about 13 instead of 80 entries per row) gave the
    same start and the same final layout (Spearman 0.600 / 0.624 against 0.602 / 0.624), and each
    search took a quarter of the time.
    """
    dist = dist.tocsr()
    keep = np.zeros(dist.nnz, dtype=bool)
    compiled(_shortest_per_row)(dist.indptr, dist.data, int(k), keep)
    coo = dist.tocoo()  # entries in the CSR order that `keep` marks
    sub = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=dist.shape)
    return sub.maximum(sub.T).tocsr()


def _huber_loss_grad(x, i, j, d, inv_u, wu, wl, delta, grad, lo, hi):  # pragma: no cover - compiled by numba
    """Weighted Huber stress of edges ``lo:hi`` and its gradient, in one pass over them (adds into ``grad``)."""
    f = 0.0
    for e in range(lo, hi):
        a, b = i[e], j[e]
        dx = x[a, 0] - x[b, 0]
        dy = x[a, 1] - x[b, 1]
        dist = np.sqrt(dx * dx + dy * dy + 1e-18)
        r = (dist - d[e]) * inv_u[e]
        # Huber without a branch (about a fifth of the edges sit inside `delta`, at random, so a branch is
        # mispredicted often; 0.30 s -> 0.17 s per pass over 12 million edges, the same sums):
        # rc = min(|r|, delta) gives rc * (|r| - rc / 2) = r^2 / 2 inside, delta * (|r| - delta / 2) outside.
        ar = abs(r)
        rc = min(ar, delta)
        f += wl[e] * rc * (ar - 0.5 * rc)
        c = (rc if r > 0 else -rc) * wu[e] / dist
        grad[a, 0] += c * dx
        grad[a, 1] += c * dy
        grad[b, 0] -= c * dx
        grad[b, 1] -= c * dy
    return f


def _huber_stress_solve(
    x0, i, j, d, w, *, delta: float, anchor: float, max_iter: int, residual: str = "absolute"
) -> np.ndarray:
    """Minimise mean_cells [sum w huber((|x_i - x_j| - d) / u)] / mean w + anchor * mean |x - x0|^2 with L-BFGS.

    ``u`` is the median edge length (``residual='absolute'``, Kruskal's stress) or ``d`` itself
    (``'relative'``). The objective is a per-cell average, so its gradient per coordinate does
    not shrink with the number of cells (L-BFGS-B's gradient tolerance stopped a 100,000-cell
    solve after 3 iterations when it was normalised by the total weight). ``O(edges)`` per step.

    Why a compiled loop (numba) rather than array operations: loss and gradient are one pass over
    the edges with no temporaries, 2.7x faster than two signed-incidence sparse products and the
    elementwise steps between them (0.25 s against 0.68 s per step on 12 million edges), and it
    allocates nothing per step, where the array form held six edge-sized temporaries.

    Above :data:`LARGE_GRAPH` cells, the cells are solved in the Morton order of ``x0``
    (:func:`_local_order`) and the edges in :data:`EDGE_BLOCKS` blocks on as many threads, which
    changes the result only in the order of float sums. On the 12 million edges of a 300,000-cell
    simulated section, two blocks on two cores took 0.11 s per pass instead of 0.17 s in one.
    """
    kw = {"delta": delta, "anchor": anchor, "max_iter": max_iter, "residual": residual}
    if len(x0) <= LARGE_GRAPH:
        return _huber_stress_solve_ordered(x0, i, j, d, w, **kw)
    order, i, j, d, w = _local_order(x0, i, j, d, w)
    out = np.empty_like(x0, dtype=np.float64)
    out[order] = _huber_stress_solve_ordered(x0[order], i, j, d, w, n_blocks=EDGE_BLOCKS, **kw)  # caller's numbering
    return out


def _local_order(x0, i, j, d, w):
    """Renumber the cells along a Morton curve of ``x0`` and sort the edges by their renumbered cells.

    The edge loop reads and writes both cells of every edge; with cells numbered in an arbitrary
    order (scRNA-seq barcodes carry no position) nearly every access misses the cache. Numbered so
    that nearby cells have nearby numbers, with the edges in the order of their first cell, the
    solve of a 300,000-cell simulated section took 53 s instead of 75 s (the same 150 steps).
    Returns ``(order, i, j, d, w)``: cell ``order[k]`` becomes cell ``k``.
    """
    n = len(x0)
    order = morton_order(x0)
    rank = np.empty(n, dtype=index_dtype(n))
    rank[order] = np.arange(n)
    a, b = rank[i], rank[j]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    del a, b
    s = sort_within_groups(lo, hi)  # as np.lexsort((hi, lo)): 3.5 s instead of 4.6 s for 12M edges
    return order, lo[s], hi[s], np.asarray(d)[s], np.asarray(w)[s]


def _huber_stress_solve_ordered(
    x0, i, j, d, w, *, delta: float, anchor: float, max_iter: int, residual: str = "absolute", n_blocks: int = 1
) -> np.ndarray:
    """:func:`_huber_stress_solve` in the given cell numbering, the edges summed in ``n_blocks`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    from scipy.optimize import minimize

    kernel = compiled(_huber_loss_grad)
    n = len(x0)
    i, j = np.ascontiguousarray(i, dtype=index_dtype(n)), np.ascontiguousarray(j, dtype=index_dtype(n))
    d = np.ascontiguousarray(d, dtype=np.float64)
    u = d if residual == "relative" else np.full_like(d, np.median(d))
    wu = w / u * (n / w.sum()) / n  # per-edge factor of the gradient (mean over cells)
    wl = w * (n / w.sum()) / n  # per-edge factor of the loss (mean over cells)
    inv_u = 1.0 / u
    del u
    cuts = np.linspace(0, len(i), n_blocks + 1).astype(np.int64)
    grads = np.empty((n_blocks, n, 2))

    def block(x, b):
        grads[b].fill(0.0)
        return kernel(x, i, j, d, inv_u, wu, wl, delta, grads[b], cuts[b], cuts[b + 1])

    def fun(flat):
        x = flat.reshape(n, 2)
        if n_blocks == 1:
            f = block(x, 0)
        else:  # fixed blocks, summed in a fixed order: the same result whatever the threads' timing
            f = sum(pool.map(block, [x] * n_blocks, range(n_blocks)))
        grad = grads[0] if n_blocks == 1 else grads.sum(0)
        an = x - x0
        f += anchor * float(np.einsum("ec,ec->", an, an)) / n
        return f * n, (grad + 2 * anchor / n * an).ravel() * n

    with ThreadPoolExecutor(max_workers=n_blocks) if n_blocks > 1 else contextlib.nullcontext() as pool:
        res = minimize(
            fun,
            np.ascontiguousarray(x0, dtype=np.float64).ravel(),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter},
        )
    return res.x.reshape(n, 2)


def _edge_scale(x, i, j, d, w) -> float:
    """Least-squares factor that brings the layout's edge lengths to the stitched distances.

    The Landmark Isomap start reproduces the graph's geodesic distances (median ratio 1.06 on a
    10,000-cell simulator section), but its edges come out shorter than the stitched edge lengths, the
    more so the larger the graph (2.2 times at 10,000 cells, 5.5 times at 300,000). Started from it,
    the stress solve first crumples the layout to fit the edges and spends hundreds of steps unfolding
    it (300,000 cells: Spearman 0.69 at the start, 0.63 after 150 steps, 0.68 after 400). Rescaled, it
    keeps the global arrangement and converges in about 100 steps to a lower stress (also at 10,000).
    """
    dx = np.linalg.norm(x[i] - x[j], axis=1)
    den = float((w * dx * dx).sum())
    return float((w * dx * d).sum()) / den if den > 0 else 1.0


def solve_components(graph: EdgeGraph, n_obs: int, rng, **solve) -> tuple[np.ndarray, np.ndarray]:
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
        if n_comp == 1:  # the usual case: no copies of the graph
            sub, ci, cj, cd, cw, kept = adjacency, ei, ej, dist, conf, core
        else:
            sub = adjacency[cells][:, cells]
            local = np.full(n_obs, -1)
            local[cells] = np.arange(len(cells))
            sel = comp[ei] == c
            ci, cj, cd, cw, kept = local[ei[sel]], local[ej[sel]], dist[sel], conf[sel], core[sel]
        x0 = _initial_layout(sub, ci[kept], cj[kept], cd[kept], n_landmarks, rng)
        x0 *= _edge_scale(x0, ci, cj, cd, cw)
        del sub
        if n_comp == 1:
            adjacency = None  # free the graph (about 1 GB at a million cells) before the solve
        xi = _huber_stress_solve(x0, ci, cj, cd, cw, **solve)
        xi = xi - xi.mean(0)
        x[cells] = xi + [offset - xi[:, 0].min(), 0.0]
        offset = x[cells, 0].max() + 0.1 * np.ptp(xi[:, 0]) + 1.0
    return x, comp
