"""Intrinsic geometry targets of a miniset (see :ref:`gears-minisets`).

Everything here is numpy and defined up to the gauge (translation, rotation,
reflection, global scale): coordinates are gauge-fixed before any target is built,
so every target is invariant to those transforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from gearsx._utils import as_rng, check_coords, check_positive_int

from ._gauge import gauge_fix
from ._knn import knn_without_self, settle_ties, tree_tolerance

__all__ = [
    "GeometryTargets",
    "adaptive_params",
    "build_targets",
    "farthest_point_sampling",
    "knn_indices",
]

#: Dimension of the over-complete Gram factor (see :ref:`gears-minisets`).
GRAM_DIM = 32
_KINDS = ("rw_stress", "gram")


def adaptive_params(n: int) -> dict[str, object]:
    """Size-dependent graph parameters of a miniset of ``n`` points (see :ref:`gears-minisets`).

    ``k = max(20, floor(0.15 n))`` (capped at ``n - 1``); random-walk steps ``[1, 2, 3]``
    for ``n <= 128``, ``[1..4]`` for ``n <= 256``, else ``[1..5]``; ``max(8, n // 16)``
    landmarks (capped at ``n``).

    Parameters
    ----------
    n
        Points in the miniset (at least 2).

    Returns
    -------
    ``{'k': ..., 'steps': [...], 'n_landmarks': ...}``

    Examples
    --------
    >>> from gearsx.geometry import adaptive_params
    >>> adaptive_params(256)
    {'k': 38, 'steps': [1, 2, 3, 4], 'n_landmarks': 16}
    """
    n = check_positive_int(n, name="n", minimum=2)
    k = min(max(20, int(np.floor(0.15 * n))), n - 1)
    n_steps = 3 if n <= 128 else 4 if n <= 256 else 5
    return {"k": k, "steps": list(range(1, n_steps + 1)), "n_landmarks": min(max(8, n // 16), n)}


def farthest_point_sampling(coords: np.ndarray, m: int, *, random_state: int = 0) -> np.ndarray:
    """Choose ``m`` landmarks by farthest-point sampling and return their indices.

    Starts from a random point (seeded) and repeatedly adds the point farthest from
    the landmarks chosen so far; ``O(n m)`` time and ``O(n)`` memory.

    Parameters
    ----------
    coords
        ``(n, d)`` point coordinates.
    m
        Landmarks to choose (at most ``n``).
    random_state
        Seed of the first landmark.

    Returns
    -------
    ``(m,)`` distinct indices into ``coords``, in the order chosen. Where points share a position,
    one of them is chosen before any of its twins, which come only after every distinct position
    is taken.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import farthest_point_sampling
    >>> square = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]])  # four corners and the centre
    >>> farthest_point_sampling(square, 3, random_state=0).tolist()  # a seeded start, then the farthest
    [4, 0, 1]
    """
    x = check_coords(coords, name="coords", min_points=1)
    m = check_positive_int(m, name="m")
    if m > len(x):
        msg = f"Cannot pick m={m} landmarks from {len(x)} points."
        raise ValueError(msg)
    rng = as_rng(random_state)
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = rng.integers(len(x))
    dist = np.linalg.norm(x - x[chosen[0]], axis=1)
    dist[chosen[0]] = -np.inf  # a chosen point is never chosen again, even where points share a position
    for t in range(1, m):
        chosen[t] = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(x - x[chosen[t]], axis=1))
        dist[chosen[t]] = -np.inf
    return chosen


def knn_indices(coords: np.ndarray, k: int, *, knn_global: np.ndarray | None = None) -> np.ndarray:
    """``k`` nearest neighbours of every point (self excluded), shape ``(n, k)``.

    With ``knn_global`` (shape ``(n, k_g)``, the full-slide neighbours of each miniset
    point in miniset-local indices, ``-1`` where the neighbour is not in the miniset),
    the true neighbours present in the miniset come first and the list is filled up to
    ``k`` with miniset-local neighbours. This prefers real neighbours over points that
    only look close because the miniset skipped the cells between them (see :ref:`gears-minisets`).

    Parameters
    ----------
    coords
        ``(n, d)`` point coordinates.
    k
        Neighbours per point (fewer than ``n``).
    knn_global
        Optional full-slide neighbours in local indices, as above.

    Returns
    -------
    ``(n, k)`` integer indices into ``coords``, nearest first.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import knn_indices
    >>> grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
    >>> sorted(knn_indices(grid, 4)[12].tolist())  # the centre of a 5 x 5 grid: its four closest points
    [7, 11, 13, 17]
    """
    x = check_coords(coords, name="coords")
    n = len(x)
    k = check_positive_int(k, name="k")
    if k >= n:
        msg = f"`k`={k} must be smaller than the number of points ({n})."
        raise ValueError(msg)
    tree = cKDTree(x)
    local = knn_without_self(tree, x, k)[1]
    if knn_global is None:
        return local
    g = np.asarray(knn_global)
    if g.ndim != 2 or g.shape[0] != n:
        msg = f"`knn_global` must have shape (n_points={n}, k_global); got {g.shape}."
        raise ValueError(msg)
    if g.size and (g.max() >= n or g.min() < -1):
        msg = "`knn_global` holds indices outside the miniset; use miniset-local indices and -1 for absent points."
        raise ValueError(msg)
    out = np.empty((n, k), dtype=np.int64)
    tol = tree_tolerance(tree)
    for i in range(n):
        gi = g[i][(g[i] >= 0) & (g[i] != i)]
        d = np.linalg.norm(x[gi] - x[i], axis=1)
        order = np.argsort(d, kind="stable")
        gi = settle_ties(d[order][None], gi[order][None], tol)[1][0][:k]  # ties by index, as in the local list
        fill = local[i][~np.isin(local[i], gi)][: k - len(gi)]
        out[i] = np.concatenate([gi, fill])
    return out


@dataclass
class GeometryTargets:
    """Intrinsic targets of one miniset (see :func:`~gearsx.geometry.build_targets`).

    Attributes
    ----------
    coords
        Gauge-fixed target coordinates ``(n, 2)`` (centred, unit RMS).
    kind
        ``'rw_stress'`` or ``'gram'``.
    gram_factor
        Canonical Gram factor ``V = U[:, :32] L^{1/2}`` with ``V V^T = coords coords^T``.
    knn
        Neighbour indices ``(n, k)`` used by the random-walk operator.
    sigma
        Frozen per-point bandwidths (distance to the ``k``-th neighbour).
    adjacency
        Symmetrised kNN adjacency ``(n, n)``, boolean.
    steps
        Random-walk steps.
    rw_powers
        ``T^s`` for each step, shape ``(len(steps), n, n)``.
    edges
        Multiscale stress edges ``(E, 2)`` (kNN + ring + landmark), ``i < j``, unique.
    edge_kind
        ``0`` kNN, ``1`` ring, ``2`` landmark, per edge.
    delta
        Reference distances of the edges.
    landmarks
        Landmark indices (farthest-point sampling).
    params
        The adaptive parameters used.
    """

    coords: np.ndarray
    kind: str
    gram_factor: np.ndarray
    knn: np.ndarray | None = None
    sigma: np.ndarray | None = None
    adjacency: np.ndarray | None = None
    steps: list[int] = field(default_factory=list)
    rw_powers: np.ndarray | None = None
    edges: np.ndarray | None = None
    edge_kind: np.ndarray | None = None
    delta: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    params: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.coords.shape[0]


def gram_factor(coords: np.ndarray, d: int = GRAM_DIM) -> np.ndarray:
    """Canonical factor ``V = U[:, :d] L^{1/2}`` of the Gram matrix of centred coordinates.

    Columns beyond the rank of the Gram matrix are zero (the factor is over-complete).
    """
    y = np.asarray(coords, dtype=np.float64)
    y = y - y.mean(0)
    # The Gram matrix Y Y^T has the same non-zero spectrum as Y^T Y; use the thin SVD of Y.
    u, s, _ = np.linalg.svd(y, full_matrices=False)
    v = np.zeros((len(y), d))
    r = min(d, len(s))
    v[:, :r] = u[:, :r] * s[:r]
    # Fix the sign of each column (largest-magnitude entry positive) so the factor is canonical.
    signs = np.sign(v[np.abs(v).argmax(0), np.arange(d)])
    signs[signs == 0] = 1.0
    return v * signs


def rw_operator(dist2: np.ndarray, sigma: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """Row-stochastic one-step operator ``T = D^-1 W``, ``W_ij = exp(-d_ij^2 / (sigma_i sigma_j))`` on edges."""
    w = np.exp(-dist2 / np.maximum(sigma[:, None] * sigma[None, :], 1e-24)) * adjacency
    return w / np.maximum(w.sum(1, keepdims=True), 1e-300)


def build_targets(
    coords: np.ndarray,
    *,
    kind: Literal["rw_stress", "gram"] = "rw_stress",
    knn_global: np.ndarray | None = None,
    random_state: int = 0,
) -> GeometryTargets:
    """Build the intrinsic geometry targets of a miniset (see :ref:`gears-minisets`).

    The coordinates are first gauge-fixed (centred, unit RMS norm). Then:

    * Gram factor (always; the target of the default ``'gram'`` training): ``V = U[:, :32] L^{1/2}``.
    * With ``kind='rw_stress'``: the random-walk operator on the symmetrised kNN
      graph with bandwidths ``sigma_i`` = distance to the ``k``-th neighbour,
      ``W_ij = exp(-d_ij^2 / (sigma_i sigma_j))``, ``T = D^-1 W`` and its powers for
      the adaptive steps; the multiscale stress edges (kNN, ring = neighbour ranks
      ``k+1 .. 3k``, and every point to each farthest-point landmark) with their
      reference distances. Bandwidths are stored and frozen: losses re-use them on
      the prediction.

    Parameters
    ----------
    coords
        Miniset coordinates, shape ``(n, 2)``, in any gauge.
    kind
        ``'rw_stress'`` (random walk + stress) or ``'gram'``.
    knn_global
        Optional full-slide neighbours in miniset-local indices (see :func:`knn_indices`).
    random_state
        Seed of the landmark choice.

    Returns
    -------
    :class:`~gearsx.geometry.GeometryTargets`

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import build_targets
    >>> t = build_targets(np.random.default_rng(0).uniform(size=(128, 2)))
    >>> t.rw_powers.shape, t.steps
    ((3, 128, 128), [1, 2, 3])
    """
    if kind not in _KINDS:
        msg = f"`kind` must be one of {_KINDS}; got {kind!r}."
        raise ValueError(msg)
    x = check_coords(coords, name="coords", min_points=3)
    y = gauge_fix(x)
    n = len(y)
    params = adaptive_params(n)
    targets = GeometryTargets(coords=y, kind=kind, gram_factor=gram_factor(y), params=params)
    if kind == "gram":
        return targets
    k = params["k"]
    knn = knn_indices(y, k, knn_global=knn_global)
    diff = y[:, None, :] - y[None, :, :]
    dist2 = (diff**2).sum(-1)
    dist = np.sqrt(dist2)
    sigma = np.maximum(dist[np.arange(n)[:, None], knn].max(1), 1e-12)
    adjacency = np.zeros((n, n), dtype=bool)
    adjacency[np.repeat(np.arange(n), k), knn.ravel()] = True
    adjacency |= adjacency.T
    t1 = rw_operator(dist2, sigma, adjacency)
    powers = [t1]
    for _ in params["steps"][1:]:
        powers.append(powers[-1] @ t1)
    # Multiscale stress edges: kNN, ring (local ranks k+1..3k), landmarks.
    order = np.argsort(dist + np.diag(np.full(n, np.inf)), axis=1)
    ring = order[:, k : min(3 * k, n - 1)]
    landmarks = farthest_point_sampling(y, params["n_landmarks"], random_state=random_state)
    pairs = [
        (np.repeat(np.arange(n), knn.shape[1]), knn.ravel(), 0),
        (np.repeat(np.arange(n), ring.shape[1]), ring.ravel(), 1),
        (np.repeat(np.arange(n), len(landmarks)), np.tile(landmarks, n), 2),
    ]
    code = np.full((n, n), 3, dtype=np.int8)  # lowest kind wins when an edge is in several families
    for a, b, c in reversed(pairs):
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        code[lo, hi] = c
    code[np.tril_indices(n)] = 3
    ii, jj = np.nonzero(code < 3)
    targets.knn = knn
    targets.sigma = sigma
    targets.adjacency = adjacency
    targets.steps = list(params["steps"])
    targets.rw_powers = np.stack(powers)
    targets.edges = np.column_stack([ii, jj])
    targets.edge_kind = code[ii, jj].astype(np.int64)
    targets.delta = dist[ii, jj]
    targets.landmarks = landmarks
    return targets
