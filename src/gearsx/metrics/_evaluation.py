"""The engine behind the geometry metrics: validated inputs and the lazily shared pieces (see :ref:`gears-evaluation`).

KD-trees, the sampled pairs and the kNN lists are computed once and reused by every metric of
:func:`gearsx.metrics.evaluate_geometry`; large inputs never build an ``N x N`` matrix.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from gearsx._utils import as_rng, check_coords, check_positive_int
from gearsx.geometry import gauge_fix, procrustes
from gearsx.geometry._knn import knn_without_self, tree_tolerance

from ._pairs import PairSample, pair_distances, sample_pairs

if TYPE_CHECKING:
    pass

__all__ = ["DEFAULT_SHELLS", "EXACT_MAX_QUERIES", "Evaluation", "pad_to_same_dim"]

#: Up to this many points, neighbourhood metrics use every point as a query.
EXACT_MAX_QUERIES = 5000


#: Default shell edges, in units of ``R20``; the last shell is open.
DEFAULT_SHELLS = (1.0, 2.0, 4.0, 8.0)


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
        if n_pairs is not None:
            check_positive_int(n_pairs, name="n_pairs")
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
    def knn_gt(self) -> tuple[np.ndarray, np.ndarray]:
        return knn_without_self(self.tree_gt, self.x_gt, self.k)

    @cached_property
    def knn_pred(self) -> tuple[np.ndarray, np.ndarray]:
        return knn_without_self(self.tree_pred, self.x_pred, self.k)

    @cached_property
    def pairs(self) -> PairSample:
        return sample_pairs(
            self.x_gt,
            k=self.k,
            n_pairs=self.n_pairs,
            random_state=self._rng(1),
            gt_tree=self.tree_gt,
            gt_knn_dist=self.knn_gt[0][:, -1],
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
        """Trustworthiness (``swap=False``) or continuity (``swap=True``), as in scikit-learn."""
        k = self.k
        if self.n <= 2 * k:
            msg = f"Trustworthiness/continuity need more than 2k = {2 * k} points (k < n/2); got {self.n}. Lower `k`."
            raise ValueError(msg)
        # "high" = space whose ranks are used, "low" = space whose neighbours are judged.
        x_high, tree_high, knn_high, knn_low = (
            (self.x_pred, self.tree_pred, self.knn_pred[1], self.knn_gt[1])
            if swap
            else (self.x_gt, self.tree_gt, self.knn_gt[1], self.knn_pred[1])
        )
        q = self.queries()
        low, high = knn_low[q], knn_high[q]
        intruder = ~(low[:, :, None] == high[:, None, :]).any(axis=2)
        rows, cols = np.nonzero(intruder)
        qi, j = q[rows], low[rows, cols]
        d_ij = np.sqrt(((x_high[qi] - x_high[j]) ** 2).sum(1))
        # rank(i, j) = 1 + #{l != i : d(i, l) < d(i, j)} = #{l : d(i, l) <= d(i, j) - tol}, the count including
        # i itself; distances within `tol` of d(i, j) are a tie, not closer, whatever the rounding (lattices).
        # A KD-tree ball count costs O(points inside), never an N x N matrix.
        tol = tree_tolerance(tree_high)
        tied = d_ij <= tol  # nothing but ties (i itself, duplicates) is closer: rank 1
        r = np.where(tied, 0.0, d_ij - tol)
        ranks = np.where(tied, 1, tree_high.query_ball_point(x_high[qi], r=r, return_length=True, workers=-1))
        penalty = float((ranks - k).sum())
        n = self.n
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

        return float(wasserstein_distance(radius(self.x_pred, self.knn_pred[0]), radius(self.x_gt, self.knn_gt[0])))


def pad_to_same_dim(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = max(a.shape[1], b.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, d - x.shape[1])))
    return pad(a), pad(b)
