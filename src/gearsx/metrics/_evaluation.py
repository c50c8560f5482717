"""The engine behind the geometry metrics: validated inputs and the lazily shared pieces (see :ref:`gears-evaluation`).

KD-trees, the sampled pairs and the kNN lists are computed once and reused by every metric of
:func:`gearsx.metrics.evaluate_geometry`; large inputs never build an ``N x N`` matrix.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from gearsx._utils import as_rng, check_coords, check_positive_int, n_distinct_rows
from gearsx.geometry import gauge_fix, procrustes
from gearsx.geometry._knn import drop_self, tree_knn, tree_tolerance

from ._pairs import PairSample, pair_distances, sample_pairs

if TYPE_CHECKING:
    pass

__all__ = ["DEFAULT_SHELLS", "EXACT_MAX_QUERIES", "Evaluation", "check_has_geometry", "pad_to_same_dim"]

#: Up to this many points, neighbourhood metrics use every point as a query.
EXACT_MAX_QUERIES = 5000


#: Default shell edges, in units of ``R20``; the last shell is open.
DEFAULT_SHELLS = (1.0, 2.0, 4.0, 8.0)
#: Query cells per neighbour search of :meth:`Evaluation.trust`: a tie holding many cells (a layout that
#: puts whole groups of cells at one position) widens each search to the whole tie, so blocks bound memory.
_TRUST_BLOCK = 256


def check_has_geometry(x: np.ndarray, *, name: str) -> None:
    """Raise when the true positions ``x`` (two or more rows) are all one position: nothing to score against."""
    if len(x) > 1 and n_distinct_rows(x) < 2:
        msg = (
            f"`{name}` has all {len(x)} points at one position: there is no geometry to score against. "
            "Pass the true coordinates (for example `obsm['spatial']`), not a placeholder."
        )
        raise ValueError(msg)


#: Fewest sampled pairs a pair metric can be scored on: with one, Stress-1 is 0 for any layout (the
#: least-squares scale fits it exactly); with two, a rank correlation is +-1 whatever the layout.
MIN_PAIRS = 3


class Evaluation:
    """Validated inputs plus the shared, lazily computed pieces (trees, pairs, kNN)."""

    def __init__(self, x_pred, x_gt, *, k: int = 20, n_pairs: int | None = None, random_state=0) -> None:
        self.k = check_positive_int(k, name="k")
        self.x_pred = check_coords(x_pred, name="X_pred")
        self.x_gt = check_coords(x_gt, name="X_gt")
        if self.x_pred.shape[0] != self.x_gt.shape[0]:
            msg = (
                f"`X_pred` and `X_gt` must describe the same cells in the same order; "
                f"got {self.x_pred.shape[0]} and {self.x_gt.shape[0]} rows."
            )
            raise ValueError(msg)
        self.n = self.x_gt.shape[0]
        if self.n < self.k + 1:
            msg = f"Need at least k + 1 = {self.k + 1} points for k = {self.k} neighbours; got {self.n}. Lower `k`."
            raise ValueError(msg)
        check_has_geometry(self.x_gt, name="X_gt")
        if n_pairs is not None and check_positive_int(n_pairs, name="n_pairs") < MIN_PAIRS:
            msg = (
                f"`n_pairs` must be at least {MIN_PAIRS}; got {n_pairs}. One pair's Stress-1 is 0 whatever the "
                "layout (the scale is fitted to it) and two pairs' rank correlation is always +-1. "
                "Pass `None` for the default budget."
            )
            raise ValueError(msg)
        self.n_pairs = n_pairs
        self.random_state = random_state

    def _rng(self, stream: int) -> np.random.Generator:
        # One independent, reproducible stream per metric, so a metric's value does not depend on
        # which other metrics were computed before it.
        seed = self.random_state if isinstance(self.random_state, int | np.integer) else 0
        return as_rng(np.random.SeedSequence([int(seed), stream]).generate_state(1)[0].item())

    @cached_property
    def tree_gt(self) -> cKDTree:
        return cKDTree(self.x_gt)

    @cached_property
    def tree_pred(self) -> cKDTree:
        return cKDTree(self.x_pred)

    @cached_property
    def pred_collapsed(self) -> bool:
        """Whether every predicted position is one point (the truth never is: ``__init__`` refuses it)."""
        return n_distinct_rows(self.x_pred) < 2

    @cached_property
    def knn_dist_gt(self) -> np.ndarray:
        """Distances ``(n, k)`` from each true position to its ``k`` nearest others, nearest first."""
        return _knn_distances(self.tree_gt, self.x_gt, self.k)

    @cached_property
    def knn_dist_pred(self) -> np.ndarray:
        """Distances ``(n, k)`` from each predicted position to its ``k`` nearest others, nearest first."""
        return _knn_distances(self.tree_pred, self.x_pred, self.k)

    @cached_property
    def pairs(self) -> PairSample:
        if self.n < MIN_PAIRS:  # two cells make one pair: see `MIN_PAIRS`
            msg = (
                f"Pairwise metrics need at least {MIN_PAIRS} cells ({MIN_PAIRS} pairs); got {self.n}. With two "
                "cells Stress-1 is 0 and the distance correlation undefined whatever the layout."
            )
            raise ValueError(msg)
        return sample_pairs(
            self.x_gt,
            k=self.k,
            n_pairs=self.n_pairs,
            random_state=self._rng(1),
            gt_tree=self.tree_gt,
            gt_knn_dist=self.knn_dist_gt[:, -1],
        )

    @cached_property
    def uniform_distances(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.pairs
        return pair_distances(self.x_pred, p.i, p.j), pair_distances(self.x_gt, p.i, p.j)

    @cached_property
    def global_scale(self) -> float:
        """Least-squares scale ``s`` minimising ``sum (s d_pred - d_gt)^2`` over the uniform pairs."""
        d_pred, d_gt = self.uniform_distances
        denom = float(d_pred @ d_pred)
        return float(d_pred @ d_gt) / denom if denom > 0 else 1.0

    @cached_property
    def stratified(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Near pairs + uniform far pairs: predicted distance, true distance, is-near label, weight."""
        p = self.pairs
        d_pred_u, d_gt_u = self.uniform_distances
        far = d_gt_u > p.r20 - p.tol  # the complement of the near pairs (see `PairSample.tol`)
        d_pred_n = pair_distances(self.x_pred, p.near_i, p.near_j)
        d_gt_n = pair_distances(self.x_gt, p.near_i, p.near_j)
        d_pred = np.concatenate([d_pred_n, d_pred_u[far]])
        d_gt = np.concatenate([d_gt_n, d_gt_u[far]])
        label = np.concatenate([np.ones(len(d_pred_n), bool), np.zeros(int(far.sum()), bool)])
        weight = np.concatenate([np.full(len(d_pred_n), p.near_weight), np.full(int(far.sum()), p.far_weight)])
        return d_pred, d_gt, label, weight

    def queries(self) -> np.ndarray:
        if self.n <= EXACT_MAX_QUERIES:
            return np.arange(self.n)
        return np.sort(self._rng(2).choice(self.n, size=EXACT_MAX_QUERIES, replace=False))

    # --- metrics -----------------------------------------------------------------------------
    def correlation(self, method: str) -> float:
        from scipy.stats import pearsonr, spearmanr

        d_pred, d_gt = self.uniform_distances
        if np.ptp(d_pred) == 0 or np.ptp(d_gt) == 0:
            return float("nan")
        if method == "spearman":
            return float(spearmanr(d_pred, d_gt).statistic)
        if method == "pearson":
            return float(pearsonr(d_pred, d_gt).statistic)
        msg = f"`method` must be 'spearman' or 'pearson'; got {method!r}."
        raise ValueError(msg)

    def stress1(self) -> float:
        d_pred, d_gt = self.uniform_distances
        resid = self.global_scale * d_pred - d_gt
        return float(np.sqrt((resid @ resid) / (d_gt @ d_gt)))

    def edge_scores(self) -> dict[str, float]:
        from sklearn.metrics import average_precision_score, roc_auc_score

        d_pred, _, label, _ = self.stratified
        n_pos, n_neg = int(label.sum()), int((~label).sum())
        if n_pos == 0 or n_neg == 0:
            return {"edge_auc": float("nan"), "bap": float("nan")}
        # Balanced AP: each class carries the same total weight, so chance level is 0.5 whatever the
        # class imbalance (and whatever the sampling rates of near and far pairs).
        w = np.where(label, 0.5 / n_pos, 0.5 / n_neg)
        return {
            "edge_auc": float(roc_auc_score(label, -d_pred)),
            "bap": float(average_precision_score(label, -d_pred, sample_weight=w)),
        }

    def shell_f1(self, shells=DEFAULT_SHELLS) -> float:
        edges = np.asarray(shells, dtype=np.float64)
        if edges.ndim != 1 or len(edges) == 0 or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
            msg = f"`shells` must be increasing positive edges in units of R20; got {shells!r}."
            raise ValueError(msg)
        d_pred, d_gt, _, weight = self.stratified
        r20 = self.pairs.r20
        n_cls = len(edges) + 1
        # a distance within `tol` below an edge lies on it (see `PairSample.tol`), as for the near pairs
        cuts = edges * r20 - self.pairs.tol
        true = np.searchsorted(cuts, d_gt, side="right")
        pred = np.searchsorted(cuts, self.global_scale * d_pred, side="right")
        conf = np.bincount(true * n_cls + pred, weights=weight, minlength=n_cls * n_cls).reshape(n_cls, n_cls)
        tp = np.diag(conf)
        support = conf.sum(axis=1) + conf.sum(axis=0)
        present = support > 0
        return float(np.mean(2 * tp[present] / support[present]))

    def trust(self, *, swap: bool = False) -> float:
        """Trustworthiness (``swap=False``) or continuity (``swap=True``), as in scikit-learn.

        For each query cell ``i``, each of its ``k`` neighbours ``j`` in the judged ("low") space costs
        ``max(rank(i, j) - k, 0)``, its rank in the other ("high") space beyond ``k``. Cells at equal
        distance from ``i`` (within :func:`~gearsx.geometry._knn.tree_tolerance`) are ordered by one
        seeded random order of the cells, the same in both spaces, where the tie decides which cells are
        among the ``k`` nearest; a tie wholly past the ``k``-th place counts at its mean rank, its value
        averaged over orders. Without ties this is exactly scikit-learn's value. A tied cell
        counted as closer than the ``k``-th would cost less than nothing (scores above 1 for layouts
        that put groups of cells at one position), and ties in row order would reward a layout for
        listing its cells in spatial order. ``NaN`` when either layout has all cells at one position.
        """
        k = self.k
        if self.n <= 2 * k:
            msg = f"Trustworthiness/continuity need more than 2k = {2 * k} points (k < n/2); got {self.n}. Lower `k`."
            raise ValueError(msg)
        # "high" = space whose ranks are used, "low" = space whose neighbours are judged.
        x_high, tree_high, x_low = (
            (self.x_pred, self.tree_pred, self.x_gt) if swap else (self.x_gt, self.tree_gt, self.x_pred)
        )
        if self.pred_collapsed:
            return float("nan")
        q = self.queries()
        # The cells in a random order: trees over the permuted rows order their ties by it (`tree_knn` orders
        # ties by index), and `order[c]` is cell c's place in it.
        perm = self._rng(4).permutation(self.n)
        order = np.empty(self.n, dtype=np.int64)
        order[perm] = np.arange(self.n)
        tree_low = cKDTree(x_low[perm])
        low = np.empty((len(q), k), dtype=np.int64)
        for start in range(0, len(q), _TRUST_BLOCK):
            rows = q[start : start + _TRUST_BLOCK]
            dist, idx = tree_knn(tree_low, x_low[rows], k + 1)
            low[start : start + len(rows)] = drop_self(dist, perm[idx], rows=rows)[1]
        qi, j = np.repeat(q, k), low.ravel()
        d_ij = np.sqrt(((x_high[qi] - x_high[j]) ** 2).sum(1))
        # rank(i, j) = 1 + c + (tied cells before j in the order), c = #{l != i : d(i, l) < d(i, j) - tol}, the
        # tie being the m cells (j included, i not) within tol of d(i, j): KD-tree ball counts (which
        # include i itself), never an N x N matrix.
        tol = tree_tolerance(tree_high)
        # a neighbour nearer than the (k + 1)-th by more than tol is among the k nearest, whatever the order:
        # no cost, no count (most of them, in a layout worth scoring)
        kth = np.repeat(np.asarray(tree_high.query(x_high[q], k=k + 2)[0])[:, -1], k)
        far = np.flatnonzero(d_ij + tol >= kth)
        qi, j, d_ij = qi[far], j[far], d_ij[far]
        centres = x_high[qi]
        upto = tree_high.query_ball_point(centres, r=d_ij + tol, return_length=True, workers=-1)
        closer = np.where(
            d_ij > tol,
            tree_high.query_ball_point(centres, r=np.maximum(d_ij - tol, 0.0), return_length=True, workers=-1),
            1,
        )
        rank = closer.astype(np.float64)
        # A tie wholly past the k-th place adds its mean, (m - 1) / 2 (far ties are common among many cells:
        # the tolerance is absolute); one that straddles the k-th place decides whether j is a neighbour
        # there, so its cells are listed and counted in the order, as the low space's tie was.
        c, m = closer - 1, upto - closer
        past = c >= k
        rank[past] += (m[past] - 1) / 2.0
        listed = np.flatnonzero(~past & (m > 1) & (c + m > k))
        if len(listed):
            rank[listed] += _tied_before(tree_high, x_high, order, qi[listed], j[listed], d_ij[listed], tol)
        n = self.n
        penalty = float(np.maximum(rank - k, 0.0).sum())
        return 1.0 - penalty * 2.0 / (len(q) * k * (2.0 * n - 3.0 * k - 1.0))

    def sliced_wasserstein(self, n_projections: int = 256, max_points: int = 50_000) -> float:
        rng = self._rng(3)
        idx = np.arange(self.n) if self.n <= max_points else np.sort(rng.choice(self.n, max_points, replace=False))
        a, b = pad_to_same_dim(gauge_fix(self.x_pred[idx]), gauge_fix(self.x_gt[idx]))
        a = a @ procrustes(a, b, reflection=True)
        # Express both clouds in the ground truth's principal axes (signs fixed by the third moment) so
        # that the fixed random directions below make the value exactly invariant to rotating X_gt.
        _, vecs = np.linalg.eigh(b.T @ b)
        vecs *= np.where(((b @ vecs) ** 3).sum(0) < 0, -1.0, 1.0)
        a, b = a @ vecs, b @ vecs
        theta = rng.normal(size=(a.shape[1], n_projections))
        theta /= np.linalg.norm(theta, axis=0, keepdims=True)
        pa, pb = np.sort(a @ theta, axis=0), np.sort(b @ theta, axis=0)
        return float(np.abs(pa - pb).mean())

    def knn_distance_w1(self) -> float:
        from scipy.stats import wasserstein_distance

        # Distances to the k-th neighbour, in gauge-fixed (unit-RMS) units of each cloud.
        def radius(x, knn_dist):
            rms = np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())
            return knn_dist[:, -1] / rms if rms > 0 else knn_dist[:, -1]

        return float(wasserstein_distance(radius(self.x_pred, self.knn_dist_pred), radius(self.x_gt, self.knn_dist_gt)))


def _tied_before(
    tree: cKDTree, x: np.ndarray, order: np.ndarray, i: np.ndarray, j: np.ndarray, d: np.ndarray, tol: float
) -> np.ndarray:
    """Count, for each pair ``(i, j)``, the cells tied with ``j`` (within ``tol`` of ``d(i, j)`` from ``i``, ``i`` not) before ``j`` in ``order``.

    ``tree`` holds ``x``. Lists the cells within ``d(i, j) + tol`` of ``i``, a block of pairs at a time.
    """
    out = np.empty(len(i), dtype=np.int64)
    for start in range(0, len(i), _TRUST_BLOCK):
        sl = slice(start, start + _TRUST_BLOCK)
        hits = tree.query_ball_point(x[i[sl]], r=d[sl] + tol, workers=-1)
        sizes = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
        members = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])
        pair = np.repeat(np.arange(len(hits)), sizes)
        dist = np.sqrt(((x[members] - x[i[sl]][pair]) ** 2).sum(1))
        tied = (dist >= d[sl][pair] - tol) & (members != i[sl][pair])
        before = tied & (order[members] < order[j[sl]][pair])
        out[sl] = np.bincount(pair[before], minlength=len(hits))
    return out


def _knn_distances(tree: cKDTree, x: np.ndarray, k: int) -> np.ndarray:
    """Distances ``(n, k)`` from each of a KD-tree's own points to its ``k`` nearest others.

    The nearest hit of a point is at distance 0 (itself or a duplicate of it), and dropping either
    leaves the same distances, so no tie has to be settled (unlike neighbour *lists*): one plain query,
    ``O(n k)`` memory even when many points share a position.
    """
    dist, _ = tree.query(x, k=k + 1)
    return np.asarray(dist).reshape(len(x), k + 1)[:, 1:]


def pad_to_same_dim(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = max(a.shape[1], b.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, d - x.shape[1])))
    return pad(a), pad(b)
