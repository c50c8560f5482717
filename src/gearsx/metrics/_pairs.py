from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from gearsx.geometry._knn import tree_tolerance

__all__ = ["PairSample", "sample_pairs"]

#: Up to this many points every pair is used (about 2 million pairs).
EXACT_MAX_POINTS = 2000
#: Number of uniformly sampled pairs above :data:`EXACT_MAX_POINTS`.
DEFAULT_N_PAIRS = 1_000_000


def _uniform_pairs(n: int, n_pairs: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    total = n * (n - 1) // 2
    if n_pairs is None:
        n_pairs = total if n <= EXACT_MAX_POINTS else DEFAULT_N_PAIRS
    if n_pairs >= total:
        i, j = np.triu_indices(n, k=1)
        return i, j, True
    # Draw with replacement (duplicates are negligible for n_pairs << total) and drop i == j.
    m = int(n_pairs * 1.05) + 16
    i = rng.integers(0, n, size=m)
    j = rng.integers(0, n, size=m)
    keep = i != j
    i, j = i[keep][:n_pairs], j[keep][:n_pairs]
    return np.minimum(i, j), np.maximum(i, j), False


@dataclass
class PairSample:
    """Pairs of points on which the distance metrics are evaluated.

    Attributes
    ----------
    i, j
        Uniform sample of unordered pairs (all pairs when ``exact``).
    exact
        Whether ``i, j`` hold every pair.
    near_i, near_j
        Pairs with ground-truth distance below ``r20`` (all of them, or a uniform
        subsample of them when there are more than the pair budget). Distances within ``tol`` of
        ``r20`` count as ``r20``, so they are never near.
    near_weight, far_weight
        Inverse sampling rates, so that weighted counts over
        ``near ∪ {uniform pairs at distance >= r20}`` (within ``tol``) estimate counts over all pairs.
    r20
        Median distance from a point to its ``k``-th nearest neighbour in the ground truth.
    tol
        Ground-truth distances within ``tol`` of each other are equal (a millionth of the points'
        extent, as for every neighbour search among coordinates). On a lattice many pairs lie
        exactly at ``r20`` (or a multiple of it), and floating-point rounding alone would decide
        their side, differently in other units or at another origin.
    """

    i: np.ndarray
    j: np.ndarray
    exact: bool
    near_i: np.ndarray
    near_j: np.ndarray
    near_weight: float
    far_weight: float
    r20: float
    tol: float


def sample_pairs(
    x_gt: np.ndarray,
    *,
    k: int = 20,
    n_pairs: int | None = None,
    random_state: int | np.random.Generator | None = 0,
    gt_tree: cKDTree | None = None,
    gt_knn_dist: np.ndarray | None = None,
) -> PairSample:
    """Build the stratified pair sample used by the pairwise metrics.

    Uniform pairs serve the correlation and stress metrics. Near pairs (ground
    truth closer than ``R20``) are rare among uniform pairs when ``N`` is large,
    so they are enumerated with a KD-tree radius search and combined with the
    uniform far pairs under inverse-probability weights: every edge and shell
    metric then estimates its all-pairs value without bias, and equals it when
    ``exact``.
    """
    from gearsx._utils import as_rng

    rng = as_rng(random_state)
    n = x_gt.shape[0]
    tree = gt_tree if gt_tree is not None else cKDTree(x_gt)
    if gt_knn_dist is None:
        gt_knn_dist = tree.query(x_gt, k=k + 1)[0][:, -1]
    r20 = float(np.median(gt_knn_dist))
    tol = tree_tolerance(tree)
    i, j, exact = _uniform_pairs(n, n_pairs, rng)
    total = n * (n - 1) // 2
    # near: d < r20, a distance within `tol` of r20 counting as r20 (query_pairs keeps d <= its radius)
    near = tree.query_pairs(max(r20 - tol, 0.0), output_type="ndarray")
    n_near_total = near.shape[0]
    budget = len(i)
    if n_near_total > budget:
        near = near[rng.choice(n_near_total, size=budget, replace=False)]
    near_weight = n_near_total / max(near.shape[0], 1)
    far_weight = total / len(i)
    return PairSample(
        i=i,
        j=j,
        exact=exact,
        near_i=near[:, 0].astype(np.int64),
        near_j=near[:, 1].astype(np.int64),
        near_weight=float(near_weight),
        far_weight=float(far_weight),
        r20=r20,
        tol=tol,
    )


def pair_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray, *, chunk: int = 2_000_000) -> np.ndarray:
    """Euclidean distances of the given pairs, computed in chunks to bound memory."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        d = x[i[s : s + chunk]] - x[j[s : s + chunk]]
        out[s : s + chunk] = np.sqrt((d * d).sum(axis=1))
    return out
