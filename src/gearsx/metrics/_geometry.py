"""Geometry-reconstruction metrics of the GEARS paper (Table 1; see :ref:`gears-evaluation`).

All metrics compare a predicted point cloud ``X_pred`` with ground-truth
coordinates ``X_gt`` of the same cells (rows correspond). Each one is invariant
to translation, rotation and reflection of either input and, being scale-free,
to a global rescaling; each is perfect for ``X_pred = X_gt``.

Large inputs never build an ``N x N`` matrix: pairwise metrics use a fixed-seed
sample of pairs (stratified so that rare near pairs are represented, with
inverse-probability weights), and neighbourhood metrics use KD-trees plus a
fixed-seed sample of query points.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from gearsx._anndata import check_obsm_key
from gearsx._utils import as_rng, check_coords, check_positive_int, doc_params
from gearsx.geometry import gauge_fix, procrustes
from gearsx.geometry._knn import knn_without_self

from ._pairs import PairSample, pair_distances, sample_pairs

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

__all__ = [
    "continuity",
    "distance_correlation",
    "edge_scores",
    "evaluate_adata",
    "evaluate_geometry",
    "knn_distance_w1",
    "shell_f1",
    "sliced_wasserstein",
    "stress1",
    "trustworthiness",
]

#: Up to this many points, neighbourhood metrics use every point as a query.
EXACT_MAX_QUERIES = 5000
#: Default shell edges, in units of ``R20``; the last shell is open.
DEFAULT_SHELLS = (1.0, 2.0, 4.0, 8.0)
_METRIC_KEYS = ("spearman", "pearson", "stress1", "edge_auc", "bap", "shell_f1", "trust20", "cont20", "swd", "w1_knn")


class _Evaluation:
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
        far = d_gt_u >= p.r20
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
        true = np.searchsorted(edges, d_gt / r20, side="right")
        pred = np.searchsorted(edges, self.global_scale * d_pred / r20, side="right")
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
        # rank(i, j) = 1 + #{l != i : d(i, l) < d(i, j)} = #{l : d(i, l) <= d(i, j)^-}, the count including i
        # itself. A KD-tree ball count costs O(points inside), never an N x N matrix.
        ranks = tree_high.query_ball_point(x_high[qi], r=np.nextafter(d_ij, 0.0), return_length=True, workers=-1)
        penalty = float((ranks - k).sum())
        n = self.n
        return 1.0 - penalty * 2.0 / (len(q) * k * (2.0 * n - 3.0 * k - 1.0))

    def sliced_wasserstein(self, n_projections: int = 256, max_points: int = 50_000) -> float:
        rng = self._rng(3)
        idx = np.arange(self.n) if self.n <= max_points else np.sort(rng.choice(self.n, max_points, replace=False))
        a, b = _pad_to_same_dim(gauge_fix(self.x_pred[idx]), gauge_fix(self.x_gt[idx]))
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


def _pad_to_same_dim(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = max(a.shape[1], b.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, d - x.shape[1])))
    return pad(a), pad(b)


_DOC_COORDS = """\
X_pred
        Predicted coordinates, shape ``(n_cells, d)``.
    X_gt
        Ground-truth coordinates of the same cells in the same order, shape ``(n_cells, d_gt)``."""


@doc_params(coords=_DOC_COORDS)
def distance_correlation(
    X_pred, X_gt, *, method: str = "spearman", n_pairs: int | None = None, random_state=0
) -> float:
    """Correlation between predicted and ground-truth pairwise distances.

    Parameters
    ----------
    {coords}
    method
        ``'spearman'`` (rank) or ``'pearson'`` (linear).
    n_pairs
        Number of pairs to sample. ``None`` uses all pairs up to 2,000 cells and a
        fixed-seed sample of 1,000,000 pairs above.
    random_state
        Seed of the pair sample.

    Returns
    -------
    The correlation coefficient (``1`` for a perfect reconstruction, about ``0`` for a random one).

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> x = np.random.default_rng(0).normal(size=(100, 2))
    >>> gx.metrics.distance_correlation(2 * x + 1, x)
    1.0
    """
    return _Evaluation(X_pred, X_gt, k=1, n_pairs=n_pairs, random_state=random_state).correlation(method)


def stress1(X_pred, X_gt, *, n_pairs: int | None = None, random_state=0) -> float:
    """Kruskal's Stress-1 after optimal global scaling of the predicted distances.

    ``sqrt(sum (s d_pred - d_gt)^2 / sum d_gt^2)`` with ``s`` the least-squares scale,
    over all pairs or a fixed-seed pair sample (see :func:`distance_correlation`)
    :cite:p:`Kruskal1964`. 0 is perfect; lower is better.
    """
    return _Evaluation(X_pred, X_gt, k=1, n_pairs=n_pairs, random_state=random_state).stress1()


def edge_scores(X_pred, X_gt, *, k: int = 20, n_pairs: int | None = None, random_state=0) -> dict[str, float]:
    """Edge ROC-AUC and balanced average precision of neighbour recovery.

    A pair is positive when its ground-truth distance is below ``R20``, the median
    distance from a cell to its ``k``-th nearest neighbour in ``X_gt``; it is scored by
    its negative predicted distance. Balanced AP weights both classes equally, so 0.5
    is chance for both scores. For large inputs all near pairs (or a uniform sample
    of them) are scored against a uniform sample of far pairs.

    Returns
    -------
    ``{'edge_auc': ..., 'bap': ...}``
    """
    return _Evaluation(X_pred, X_gt, k=k, n_pairs=n_pairs, random_state=random_state).edge_scores()


def shell_f1(X_pred, X_gt, *, k: int = 20, shells=DEFAULT_SHELLS, n_pairs: int | None = None, random_state=0) -> float:
    """Macro F1 of classifying pairs into distance shells.

    Shells are intervals of distance in units of ``R20`` (see :func:`edge_scores`);
    the default edges ``(1, 2, 4, 8)`` give the shells ``[0, 1)``, ``[1, 2)``, ``[2, 4)``,
    ``[4, 8)`` and ``[8, inf)``. Predicted distances are first multiplied by the
    least-squares global scale (as in :func:`stress1`). Counts are weighted by the
    inverse sampling rate of near and far pairs, so the value estimates the
    all-pairs macro F1 (exact for up to 2,000 cells).
    """
    return _Evaluation(X_pred, X_gt, k=k, n_pairs=n_pairs, random_state=random_state).shell_f1(shells)


def trustworthiness(X_pred, X_gt, *, k: int = 20, random_state=0) -> float:
    """Trustworthiness@k: how many predicted neighbours are true neighbours.

    Measures intrusions :cite:p:`Venna2001`. Identical to
    :func:`sklearn.manifold.trustworthiness` ``(X_gt, X_pred, n_neighbors=k)`` up to
    ties, but it never builds an ``N x N`` matrix: the rank of each intruder is a
    KD-tree ball count, and above 5,000 cells a fixed-seed sample of 5,000 query cells
    is used. Written here rather than calling scikit-learn because scikit-learn's
    version is quadratic in memory.
    """
    return _Evaluation(X_pred, X_gt, k=k, random_state=random_state).trust(swap=False)


def continuity(X_pred, X_gt, *, k: int = 20, random_state=0) -> float:
    """Continuity@k: how many true neighbours stay neighbours in the prediction.

    Trustworthiness with the roles of the two spaces exchanged, i.e.
    :func:`sklearn.manifold.trustworthiness` ``(X_pred, X_gt, n_neighbors=k)``.
    """
    return _Evaluation(X_pred, X_gt, k=k, random_state=random_state).trust(swap=True)


def sliced_wasserstein(X_pred, X_gt, *, n_projections: int = 256, max_points: int = 50_000, random_state=0) -> float:
    """Sliced 1-Wasserstein distance between gauge-fixed, Procrustes-aligned point clouds.

    Both clouds are centred and scaled to unit RMS norm, the prediction is aligned to
    the ground truth by orthogonal Procrustes (reflections allowed; a lower-dimensional
    cloud is zero-padded), and the 1-D Wasserstein-1 distances along ``n_projections``
    random unit directions are averaged. Above ``max_points`` cells a fixed-seed
    subsample is used :cite:p:`Bonneel2015`. 0 is perfect.
    """
    ev = _Evaluation(X_pred, X_gt, k=1, random_state=random_state)
    check_positive_int(n_projections, name="n_projections")
    check_positive_int(max_points, name="max_points", minimum=2)
    return ev.sliced_wasserstein(n_projections, max_points)


def knn_distance_w1(X_pred, X_gt, *, k: int = 20) -> float:
    """Wasserstein-1 distance between the distributions of ``k``-NN distances.

    For every cell, the distance to its ``k``-th nearest neighbour is measured in
    each cloud after gauge fixing (unit RMS norm around the centroid); the two
    distributions are compared with :func:`scipy.stats.wasserstein_distance`.
    It measures local length-scale calibration; 0 is perfect.
    """
    return _Evaluation(X_pred, X_gt, k=k).knn_distance_w1()


@doc_params(coords=_DOC_COORDS)
def evaluate_geometry(X_pred, X_gt, *, k: int = 20, n_pairs: int | None = None, random_state=0) -> dict[str, float]:
    """All reconstruction metrics of the GEARS paper (Table 1) in one call.

    Shared work (KD-trees, the pair sample, neighbour lists) is done once.

    Parameters
    ----------
    {coords}
    k
        Neighbourhood size for ``R20``, trustworthiness, continuity and the kNN-distance W1.
    n_pairs
        Pair budget (see :func:`distance_correlation`).
    random_state
        Seed of every sample (pairs, query cells, projections).

    Returns
    -------
    A dict with keys

    ``spearman``, ``pearson``
        :func:`distance_correlation` (higher is better).
    ``stress1``
        :func:`stress1` (lower is better).
    ``edge_auc``, ``bap``
        :func:`edge_scores` (higher is better).
    ``shell_f1``
        :func:`shell_f1` (higher is better).
    ``trust20``, ``cont20``
        :func:`trustworthiness`, :func:`continuity` at ``k`` (higher is better; the
        keys keep the paper's names whatever ``k``).
    ``swd``
        :func:`sliced_wasserstein` (lower is better).
    ``w1_knn``
        :func:`knn_distance_w1` (lower is better).

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(300, 2))
    >>> scores = gx.metrics.evaluate_geometry(x + 0.01 * rng.normal(size=x.shape), x)
    >>> scores["spearman"] > 0.99
    True
    """
    ev = _Evaluation(X_pred, X_gt, k=k, n_pairs=n_pairs, random_state=random_state)
    for name, x in (("X_pred", ev.x_pred), ("X_gt", ev.x_gt)):
        if len(np.unique(x, axis=0)) < 2:
            warnings.warn(
                f"`{name}` has all {len(x)} points at one position (a collapsed layout): distance correlations "
                "are undefined (NaN) and the neighbourhood scores are meaningless.",
                RuntimeWarning,
                stacklevel=2,
            )
    out = {
        "spearman": ev.correlation("spearman"),
        "pearson": ev.correlation("pearson"),
        "stress1": ev.stress1(),
        **ev.edge_scores(),
        "shell_f1": ev.shell_f1(),
        "trust20": ev.trust(swap=False),
        "cont20": ev.trust(swap=True),
        "swd": ev.sliced_wasserstein(),
        "w1_knn": ev.knn_distance_w1(),
    }
    return {key: out[key] for key in _METRIC_KEYS}


def evaluate_adata(
    adata: AnnData,
    pred_key: str,
    gt_key: str,
    *,
    k: int = 20,
    n_pairs: int | None = None,
    random_state=0,
) -> pd.DataFrame:
    """Evaluate a reconstruction stored in ``adata.obsm`` against ground truth.

    Parameters
    ----------
    adata
        Annotated data matrix.
    pred_key
        ``obsm`` key of the predicted coordinates (e.g. ``'X_gears_spatial'``).
    gt_key
        ``obsm`` key of the ground-truth coordinates (e.g. ``'spatial_gt'``).
    k, n_pairs, random_state
        See :func:`evaluate_geometry`.

    Returns
    -------
    A one-row :class:`pandas.DataFrame` indexed by ``pred_key`` with the columns of
    :func:`evaluate_geometry` and ``n_cells``.
    """
    import pandas as pd

    for key, arg in ((pred_key, "pred_key"), (gt_key, "gt_key")):
        check_obsm_key(adata, key, arg)
    scores = evaluate_geometry(
        np.asarray(adata.obsm[pred_key]),
        np.asarray(adata.obsm[gt_key]),
        k=k,
        n_pairs=n_pairs,
        random_state=random_state,
    )
    return pd.DataFrame({**scores, "n_cells": adata.n_obs}, index=pd.Index([pred_key], name="prediction"))
