"""Nearest neighbours, in one place: exact or approximate search, self excluded, within groups (slides).

Every kNN search of gearsx goes through this module, so the switch between an exact search
(scikit-learn, SciPy's KD-tree) and an approximate one (pynndescent, above :data:`EXACT_MAX` rows)
and the handling of a point's own hit are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from gearsx._utils import plain

__all__ = [
    "EXACT_MAX",
    "drop_self",
    "group_knn",
    "knn",
    "knn_index",
    "knn_matrix",
    "knn_query",
    "knn_without_self",
    "settle_ties",
    "tree_knn",
    "tree_tolerance",
    "unit_rows",
]

#: Above this many rows a search is approximate (pynndescent) instead of exact.
EXACT_MAX = 50_000
#: Among coordinates, distances within this fraction of the points' extent are a tie (broken by index):
#: well above floating-point rounding (about 1e-16 of a coordinate, 1e-7 in float32), well below
#: any spacing a slide resolves (a Visium slide of 10,000 pixels: 0.01 pixel).
TIE_TOLERANCE = 1e-6

#: Query rows per block of an exact cosine search (bounds its unit rows and distances).
_QUERY_BLOCK = 65_536
#: pynndescent's graph construction with fewer candidates per join (its default is ``min(60, k)``) and an
#: early stop at 1% updates per round (its default 0.1%): on 300,000 embeddings of 128 dimensions with
#: ``k = 50`` this took 30 s instead of 52 s, and its recall of the exact neighbours rose from 0.980 to
#: 0.998 (more, cheaper rounds); for searches of 16 neighbours or fewer only the early stop differs.
_NND_BUILD = {"max_candidates": 16, "delta": 0.01}


def drop_self(dist: np.ndarray, idx: np.ndarray, *, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from ``k + 1``-neighbour results ``(n, k + 1)`` -> ``(n, k)``.

    Row ``r`` belongs to point ``rows[r]`` (default: point ``r``). When a duplicate point took the
    row's own slot, the farthest hit is dropped instead.
    """
    n, k = idx.shape[0], idx.shape[1] - 1
    own = np.arange(n) if rows is None else np.asarray(rows)
    is_self = idx == own[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return dist[keep].reshape(n, k), idx[keep].reshape(n, k)


def knn_matrix(idx: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """Sparse ``(n, n)`` matrix whose row ``i`` holds ``values[i]`` at the columns ``idx[i]`` (``(n, k)`` each).

    Built from its CSR arrays directly (every row has exactly ``k`` entries), for products that sum
    over each row's neighbours.
    """
    n, k = idx.shape
    return sp.csr_matrix((values.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


def settle_ties(dist: np.ndarray, idx: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row's neighbours by distance, with distances within ``tol`` of each other in index order.

    ``dist`` must be sorted along each row. Neighbours form runs in which each distance is within
    ``tol`` of the one before; a run is one tie, ordered by index. Written here because no
    neighbour library breaks ties by a tolerance: a KD-tree orders equal distances by their
    floating-point rounding, which changes with the coordinates' units and origin.
    """
    if idx.shape[1] < 2 or idx.size == 0:
        return dist, idx
    step = np.diff(dist, axis=1) > tol
    tied = np.flatnonzero(~step.all(axis=1))  # only rows holding a tie are reordered
    if len(tied) == 0:
        return dist, idx
    run = np.zeros((len(tied), idx.shape[1]), dtype=np.int64)
    np.cumsum(step[tied], axis=1, out=run[:, 1:])
    order = np.argsort(run * (int(idx.max()) + 1) + idx[tied], axis=1, kind="stable")
    dist, idx = dist.copy(), idx.copy()
    dist[tied] = np.take_along_axis(dist[tied], order, axis=1)
    idx[tied] = np.take_along_axis(idx[tied], order, axis=1)
    return dist, idx


def tree_tolerance(tree: cKDTree) -> float:
    """Return the distance below which two distances among a KD-tree's points are a tie (:data:`TIE_TOLERANCE`)."""
    return TIE_TOLERANCE * float(np.max(tree.maxes - tree.mins)) if tree.n else 0.0


def tree_knn(tree: cKDTree, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices ``(n_points, k)`` of the ``k`` nearest tree points of each of ``points``, ties by index.

    For low-dimensional coordinates. Distances within :func:`tree_tolerance` of each other count as
    equal and are ordered by index (:func:`settle_ties`); when a tie straddles the ``k``-th
    neighbour, the search widens until the whole tie is seen. So the neighbours on a regular grid (a
    Visium lattice, where six or twelve spots are equidistant) are the same in any units and at any
    origin, where a plain KD-tree query orders them by floating-point rounding.
    """
    n = tree.n
    k = min(k, n)
    tol = tree_tolerance(tree)
    dist = np.empty((len(points), k))
    idx = np.empty((len(points), k), dtype=np.int64)
    todo = np.arange(len(points))
    # a few more than wanted show whether a tie runs past the last, so most rows need one query: one more
    # for small k (a kNN graph), up to 24 more for large k (a miniset's candidate pool), almost free there
    m = min(k + max(1, min(24, k // 16)), n)
    while len(todo):
        d, i = tree.query(points[todo], k=m)
        d, i = np.asarray(d).reshape(len(todo), m), np.asarray(i).reshape(len(todo), m)
        # the last wanted neighbour's tie is whole when a farther distance follows it, or the search saw every point
        whole = (np.diff(d[:, k - 1 :], axis=1) > tol).any(axis=1) if m < n else np.ones(len(todo), dtype=bool)
        d, i = settle_ties(d[whole], i[whole], tol)
        dist[todo[whole]], idx[todo[whole]] = d[:, :k], i[:, :k]
        todo = todo[~whole]
        # widen past the k-th by 24 more (a ring of equidistant lattice points holds 6, 12 or 24), then double the
        # margin; doubling k itself made a miniset's candidate pool (k about 1,000) cost three single queries
        m = min(max(m + 24, k + 2 * (m - k)), n)
    return dist, idx


def knn_without_self(tree: cKDTree, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the ``k`` nearest neighbours of every point of a KD-tree, itself excluded.

    ``x`` holds the tree's own points. Robust to duplicated points (see :func:`drop_self`). Ties are
    broken by index, not by floating-point rounding (see :func:`tree_knn`).
    """
    return drop_self(*tree_knn(tree, x, k + 1))


def knn(x: np.ndarray, k: int, *, metric: str = "euclidean", random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` nearest neighbours of every row of ``x`` among the others: indices and distances, ``(n, k)`` each.

    Exact up to :data:`EXACT_MAX` rows (scikit-learn), approximate above (pynndescent, seeded).
    """
    if len(x) > EXACT_MAX:
        from pynndescent import NNDescent

        index = NNDescent(x, n_neighbors=k + 1, metric=metric, random_state=random_state, **_NND_BUILD)
        idx, dist = index.neighbor_graph
    else:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(x).kneighbors(x)
    dist, idx = drop_self(dist, idx)
    return idx, dist


def knn_index(reference: np.ndarray, *, metric: str = "euclidean", random_state: int = 0) -> Callable[..., np.ndarray]:
    """Index ``reference`` once and return ``search(query, k)``: indices ``(n_query, k)``, nearest first.

    Exact up to :data:`EXACT_MAX` reference rows (scikit-learn), approximate above (pynndescent,
    seeded). For searching many query blocks against one reference without rebuilding the index.
    """
    if len(reference) > EXACT_MAX:
        from pynndescent import NNDescent

        index = NNDescent(reference, metric=metric, n_neighbors=30, random_state=random_state)
        return lambda query, k: index.query(query, k=k)[0]
    from sklearn.neighbors import NearestNeighbors

    if metric == "cosine":  # the same order, by scikit-learn's fast kernel (see unit_rows)
        nn = NearestNeighbors(metric="euclidean", algorithm="brute").fit(unit_rows(reference))

        def search(query: np.ndarray, k: int) -> np.ndarray:
            # in blocks: each holds its unit rows and the search's distances, never all the queries' at once
            idx = np.empty((len(query), k), dtype=np.int64)
            for start in range(0, len(query), _QUERY_BLOCK):
                rows = slice(start, start + _QUERY_BLOCK)
                idx[rows] = nn.kneighbors(unit_rows(query[rows]), n_neighbors=k, return_distance=False)
            return idx

        return search
    nn = NearestNeighbors(metric=metric).fit(reference)
    return lambda query, k: nn.kneighbors(query, n_neighbors=k, return_distance=False)


def unit_rows(x, dtype=None) -> np.ndarray:
    """Return the rows of ``x`` (dense or sparse, densified) at unit length, zero rows left zero, as ``dtype`` if given.

    The cosine searches (:func:`knn_index`) and the anchors' similarities use it.

    Between unit vectors ``|u - v|^2 = 2 - 2 cos(u, v)``, so the Euclidean order is the cosine order,
    and scikit-learn's brute-force Euclidean search (a compiled, chunked top-k) finds it several
    times faster than its cosine search (a full distance matrix per chunk, clipped, then partially
    sorted in NumPy). In an anchored reconstruction of 300,000 simulated cells against 1,614 spots
    the searches took 4.9 s instead of 12.3 s; on the same-tissue benchmark's seqFISH, MERFISH and
    Xenium queries the anchors came out identical.
    """
    x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_query(
    query: np.ndarray, reference: np.ndarray, k: int, *, metric: str = "euclidean", random_state: int = 0
) -> np.ndarray:
    """Find the ``k`` nearest reference rows of every query row: indices ``(n_query, k)``, nearest first.

    Exact up to :data:`EXACT_MAX` reference rows, approximate above (pynndescent, seeded).
    """
    return knn_index(reference, metric=metric, random_state=random_state)(query, k)


def group_knn(
    x: np.ndarray, groups: np.ndarray | None, k: int, *, name: str = "k", clip: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Nearest neighbours of low-dimensional points (coordinates) within each group (slide).

    Yields ``(rows, neighbours)`` per group: ``rows`` are the group's global row indices, ``neighbours`` ``(len(rows), k)`` global indices of
    each row's ``k`` nearest rows of the same group, itself excluded. A group with ``k`` rows or fewer
    raises a ``ValueError`` naming the group and the argument ``name``; with ``clip=True`` it uses
    ``len(rows) - 1`` neighbours instead (and is skipped when that is 0). Exact at any size (a KD-tree
    per group, fast in two or three dimensions).
    """
    labels = np.zeros(len(x), dtype=np.int64) if groups is None else np.asarray(groups)
    if len(labels) != len(x):  # np.unique would group the first rows only, or index past the points
        msg = f"`groups` has {len(labels)} entries for {len(x)} points; pass one group (slide) per point."
        raise ValueError(msg)
    values, codes = np.unique(labels, return_inverse=True)
    for g, value in enumerate(values):
        rows = np.flatnonzero(codes == g)
        kk = k
        if len(rows) <= k:
            if not clip:
                where = "" if groups is None else f" in group {plain(value)!r}"
                msg = f"`{name}`={k} needs more than {k} points{where}; found {len(rows)}. Lower `{name}`."
                raise ValueError(msg)
            kk = len(rows) - 1
            if kk < 1:
                continue
        pts = x[rows]
        yield rows, rows[knn_without_self(cKDTree(pts), pts, kk)[1]]
