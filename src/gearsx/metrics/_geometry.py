"""Geometry-reconstruction metrics: a layout against the known positions of the same cells (see :ref:`gears-evaluation`).

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
from typing import TYPE_CHECKING

import numpy as np

from gearsx._anndata import check_distinct_positions, check_obsm_key, check_slide_key, warn_unkeyed_slides
from gearsx._utils import check_positive_int, doc_params, plain

from ._evaluation import DEFAULT_SHELLS, Evaluation

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

_METRIC_KEYS = ("spearman", "pearson", "stress1", "edge_auc", "bap", "shell_f1", "trust20", "cont20", "swd", "w1_knn")


_DOC_COORDS = """\
X_pred
        Predicted coordinates, shape ``(n_cells, d)``.
    X_gt
        Ground-truth coordinates of the same cells in the same order, shape ``(n_cells, d_gt)``,
        at two or more distinct positions."""

_DOC_NEIGHBOURS = """\
k
        Neighbours per cell (at most ``n_cells - 1``).
    random_state
        Seed of the query-cell sample above 5,000 cells and of the order of tied cells."""


@doc_params(coords=_DOC_COORDS)
def distance_correlation(
    X_pred: np.ndarray, X_gt: np.ndarray, *, method: str = "spearman", n_pairs: int | None = None, random_state: int = 0
) -> float:
    """Correlation between predicted and ground-truth pairwise distances.

    Parameters
    ----------
    {coords}
    method
        ``'spearman'`` (rank) or ``'pearson'`` (linear).
    n_pairs
        Number of pairs to sample (at least 3). ``None`` uses all pairs up to 2,000 cells and a
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
    >>> round(gx.metrics.distance_correlation(2 * x + 1, x), 6)
    1.0
    """
    return Evaluation(X_pred, X_gt, k=1, n_pairs=n_pairs, random_state=random_state).correlation(method)


@doc_params(coords=_DOC_COORDS)
def stress1(X_pred: np.ndarray, X_gt: np.ndarray, *, n_pairs: int | None = None, random_state: int = 0) -> float:
    """Kruskal's Stress-1 after optimal global scaling of the predicted distances.

    ``sqrt(sum (s d_pred - d_gt)^2 / sum d_gt^2)`` with ``s`` the least-squares scale,
    over all pairs or a fixed-seed pair sample (see :func:`distance_correlation`)
    :cite:p:`Kruskal1964`. 0 is perfect; lower is better.

    Parameters
    ----------
    {coords}
    n_pairs, random_state
        Pair budget and its seed (see :func:`distance_correlation`).

    Returns
    -------
    Stress-1, ``0`` for a layout equal to ``X_gt`` up to rotation, translation and scale.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(300, 2))
    >>> round(gx.metrics.stress1(2 * x + 1, x), 6)  # scale and shift are free
    0.0
    >>> bool(gx.metrics.stress1(x + rng.normal(scale=0.05, size=x.shape), x) > 0.05)
    True
    """
    return Evaluation(X_pred, X_gt, k=1, n_pairs=n_pairs, random_state=random_state).stress1()


@doc_params(coords=_DOC_COORDS)
def edge_scores(
    X_pred: np.ndarray, X_gt: np.ndarray, *, k: int = 20, n_pairs: int | None = None, random_state: int = 0
) -> dict[str, float]:
    """Edge ROC-AUC and balanced average precision of neighbour recovery.

    A pair is positive when its ground-truth distance is below ``R20``, the median
    distance from a cell to its ``k``-th nearest neighbour in ``X_gt``; it is scored by
    its negative predicted distance. Balanced AP weights both classes equally, so 0.5
    is chance for both scores. For large inputs all near pairs (or a uniform sample
    of them) are scored against a uniform sample of far pairs.

    Parameters
    ----------
    {coords}
    k
        Neighbour rank that sets ``R20``.
    n_pairs, random_state
        Pair budget and its seed (see :func:`distance_correlation`).

    Returns
    -------
    ``{{'edge_auc': ..., 'bap': ...}}``

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(300, 2))
    >>> gx.metrics.edge_scores(x[:, ::-1], x)  # a reflection keeps every neighbour
    {{'edge_auc': 1.0, 'bap': 1.0}}
    >>> round(gx.metrics.edge_scores(rng.permutation(x), x)["edge_auc"], 1)  # shuffled cells: chance
    0.5
    """
    return Evaluation(X_pred, X_gt, k=k, n_pairs=n_pairs, random_state=random_state).edge_scores()


@doc_params(coords=_DOC_COORDS)
def shell_f1(
    X_pred: np.ndarray,
    X_gt: np.ndarray,
    *,
    k: int = 20,
    shells: tuple[float, ...] = DEFAULT_SHELLS,
    n_pairs: int | None = None,
    random_state: int = 0,
) -> float:
    """Macro F1 of classifying pairs into distance shells.

    Shells are intervals of distance in units of ``R20`` (see :func:`edge_scores`);
    the default edges ``(1, 2, 4, 8)`` give the shells ``[0, 1)``, ``[1, 2)``, ``[2, 4)``,
    ``[4, 8)`` and ``[8, inf)``. Predicted distances are first multiplied by the
    least-squares global scale (as in :func:`stress1`). Counts are weighted by the
    inverse sampling rate of near and far pairs, so the value estimates the
    all-pairs macro F1 (exact for up to 2,000 cells).

    Parameters
    ----------
    {coords}
    k
        Neighbour rank that sets ``R20``.
    shells
        Increasing shell edges in units of ``R20``.
    n_pairs, random_state
        Pair budget and its seed (see :func:`distance_correlation`).

    Returns
    -------
    The macro F1, ``1`` for a layout equal to ``X_gt`` up to rotation, translation and scale.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> x = np.random.default_rng(0).uniform(size=(300, 2))
    >>> gx.metrics.shell_f1(3 * x, x)
    1.0
    """
    return Evaluation(X_pred, X_gt, k=k, n_pairs=n_pairs, random_state=random_state).shell_f1(shells)


@doc_params(coords=_DOC_COORDS, neighbours=_DOC_NEIGHBOURS)
def trustworthiness(X_pred: np.ndarray, X_gt: np.ndarray, *, k: int = 20, random_state: int = 0) -> float:
    """Trustworthiness@k: how many predicted neighbours are true neighbours.

    Measures intrusions :cite:p:`Venna2001`. Identical to
    :func:`sklearn.manifold.trustworthiness` ``(X_gt, X_pred, n_neighbors=k)`` when no two
    cells lie at the same distance from a third, but it never builds an ``N x N`` matrix:
    the rank of each intruder is a KD-tree ball count, and above 5,000 cells a fixed-seed
    sample of 5,000 query cells is used. Written here rather than calling scikit-learn
    because scikit-learn's version is quadratic in memory.

    Cells at equal distance from a cell (a layout that puts several cells at one
    position, such as each cell at its spot's centre, or a lattice) are ordered by one
    random order of the cells drawn from ``random_state``, the same in both layouts,
    where the order decides which cells are among the ``k`` nearest (a tie further out
    counts at its mean rank). On such layouts the value is scikit-learn's averaged over
    orders of the tied cells, up to the spread of that average: about 1e-4 with tens of
    cells per position, 0.005 with 80 in 1,200 cells. ``NaN`` when either layout has all
    cells at one position.

    Parameters
    ----------
    {coords}
    {neighbours}

    Returns
    -------
    Trustworthiness in ``[0, 1]`` (``1`` when no predicted neighbour is a false one), or ``NaN``.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(300, 2))
    >>> gx.metrics.trustworthiness(x[:, ::-1], x)
    1.0
    >>> round(gx.metrics.trustworthiness(x + rng.normal(scale=0.05, size=x.shape), x), 3)
    0.985
    """
    return Evaluation(X_pred, X_gt, k=k, random_state=random_state).trust(swap=False)


@doc_params(coords=_DOC_COORDS, neighbours=_DOC_NEIGHBOURS)
def continuity(X_pred: np.ndarray, X_gt: np.ndarray, *, k: int = 20, random_state: int = 0) -> float:
    """Continuity@k: how many true neighbours stay neighbours in the prediction.

    Trustworthiness with the roles of the two spaces exchanged, i.e.
    :func:`sklearn.manifold.trustworthiness` ``(X_pred, X_gt, n_neighbors=k)``, with ties
    ordered as in :func:`trustworthiness`.

    Parameters
    ----------
    {coords}
    {neighbours}

    Returns
    -------
    Continuity in ``[0, 1]`` (``1`` when every true neighbour is a predicted one), or ``NaN``.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> x = np.random.default_rng(0).uniform(size=(300, 2))
    >>> gx.metrics.continuity(2 * x, x)
    1.0
    """
    return Evaluation(X_pred, X_gt, k=k, random_state=random_state).trust(swap=True)


@doc_params(coords=_DOC_COORDS)
def sliced_wasserstein(
    X_pred: np.ndarray, X_gt: np.ndarray, *, n_projections: int = 256, max_points: int = 50_000, random_state: int = 0
) -> float:
    """Sliced 1-Wasserstein distance between gauge-fixed, Procrustes-aligned point clouds.

    Both clouds are centred and scaled to unit RMS norm, the prediction is aligned to
    the ground truth by orthogonal Procrustes (reflections allowed; a lower-dimensional
    cloud is zero-padded), and the 1-D Wasserstein-1 distances along ``n_projections``
    random unit directions are averaged. Above ``max_points`` cells a fixed-seed
    subsample is used :cite:p:`Bonneel2015`. 0 is perfect.

    Parameters
    ----------
    {coords}
    n_projections
        Random directions averaged over.
    max_points
        Cells used at most (a seeded sample above it).
    random_state
        Seed of the directions and of the sample.

    Returns
    -------
    The distance, in units of the gauge-fixed clouds (RMS norm ``1``).

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> x = np.random.default_rng(0).uniform(size=(300, 2))
    >>> round(gx.metrics.sliced_wasserstein(5 * x - 2, x), 6)
    0.0
    """
    ev = Evaluation(X_pred, X_gt, k=1, random_state=random_state)
    check_positive_int(n_projections, name="n_projections")
    check_positive_int(max_points, name="max_points", minimum=2)
    return ev.sliced_wasserstein(n_projections, max_points)


@doc_params(coords=_DOC_COORDS)
def knn_distance_w1(X_pred: np.ndarray, X_gt: np.ndarray, *, k: int = 20) -> float:
    """Wasserstein-1 distance between the distributions of ``k``-NN distances.

    For every cell, the distance to its ``k``-th nearest neighbour is measured in
    each cloud after gauge fixing (unit RMS norm around the centroid); the two
    distributions are compared with :func:`scipy.stats.wasserstein_distance`.
    It measures local length-scale calibration; 0 is perfect.

    Parameters
    ----------
    {coords}
    k
        Neighbour rank whose distance is compared.

    Returns
    -------
    The distance, in units of the gauge-fixed clouds (RMS norm ``1``).

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> x = np.random.default_rng(0).uniform(size=(300, 2))
    >>> round(gx.metrics.knn_distance_w1(2 * x, x), 6)
    0.0
    """
    return Evaluation(X_pred, X_gt, k=k).knn_distance_w1()


@doc_params(coords=_DOC_COORDS)
def evaluate_geometry(
    X_pred: np.ndarray, X_gt: np.ndarray, *, k: int = 20, n_pairs: int | None = None, random_state: int = 0
) -> dict[str, float]:
    """All reconstruction metrics of this module in one call.

    Shared work (KD-trees, the pair sample, neighbour lists) is done once.

    Parameters
    ----------
    {coords}
    k
        Neighbourhood size for ``R20``, trustworthiness, continuity and the kNN-distance W1.
    n_pairs
        Pair budget (see :func:`distance_correlation`).
    random_state
        Seed of every sample (pairs, query cells, projections) and of the order of tied cells.

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
        keys keep the names of the default ``k=20`` whatever ``k``).
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
    ev = Evaluation(X_pred, X_gt, k=k, n_pairs=n_pairs, random_state=random_state)
    if ev.pred_collapsed:
        warnings.warn(
            f"`X_pred` has all {ev.n} points at one position (a collapsed layout): distance correlations, "
            "trustworthiness and continuity are undefined (NaN); edge ROC-AUC is 0.5 and Stress-1 is 1, as for a "
            "layout without information.",
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
    slide_key: str | None = None,
    k: int = 20,
    n_pairs: int | None = None,
    random_state: int = 0,
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
    slide_key
        ``obs`` column with the section each cell's true position lies in. Each metric is then
        computed within each section and averaged over the sections (equal weights): the distance
        between true positions of two sections means nothing. ``None``: all cells lie in one section
        (a warning names ``obs['slide']``, ``obs['library_id']``, ``obs['batch']`` or a similar column
        when it holds several values).
    k, n_pairs, random_state
        See :func:`evaluate_geometry`.

    Returns
    -------
    A one-row :class:`pandas.DataFrame` indexed by ``pred_key`` with the columns of
    :func:`evaluate_geometry`, ``n_cells`` and ``n_slides``.

    Examples
    --------
    >>> import numpy as np, anndata as ad, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> a = ad.AnnData(np.zeros((400, 1), dtype=np.float32))
    >>> a.obs["section"] = np.repeat(["s1", "s2"], 200)
    >>> a.obsm["spatial_gt"] = rng.uniform(size=(400, 2))  # both sections in one frame
    >>> a.obsm["pred"] = a.obsm["spatial_gt"] + 5 * (a.obs["section"] == "s2").to_numpy()[:, None]
    >>> scores = gx.metrics.evaluate_adata(a, "pred", "spatial_gt", slide_key="section")
    >>> round(float(scores["spearman"].iloc[0]), 6)  # each section is right; across them it is not
    1.0
    """
    random_state = check_positive_int(random_state, name="random_state", minimum=0)
    import pandas as pd

    for key, arg in ((pred_key, "pred_key"), (gt_key, "gt_key")):
        check_obsm_key(adata, key, arg)
    check_slide_key(adata, slide_key)
    if slide_key is None:
        warn_unkeyed_slides(adata, "slide_key")
        groups = [np.arange(adata.n_obs)]
    else:
        labels = adata.obs[slide_key].astype("category")
        codes = labels.cat.codes.to_numpy()
        groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
        k = check_positive_int(k, name="k")
        for rows in groups:
            if len(rows) <= 2 * k:  # trustworthiness and continuity need k < n / 2
                msg = (
                    f"slide {plain(labels.iloc[rows[0]])!r} (`obs[{slide_key!r}]`) has {len(rows)} cells; scoring at "
                    f"k={k} needs more than 2k = {2 * k} per slide. Lower `k` or leave that slide out."
                )
                raise ValueError(msg)
    pred, gt = np.asarray(adata.obsm[pred_key]), np.asarray(adata.obsm[gt_key])
    check_distinct_positions(
        gt,
        None if slide_key is None else adata.obs[slide_key].to_numpy(),
        spatial_key=gt_key,
        slide_key=slide_key,
        items="cells",
        purpose="score against",
    )
    per_slide = [
        evaluate_geometry(pred[rows], gt[rows], k=k, n_pairs=n_pairs, random_state=random_state) for rows in groups
    ]
    scores = {m: float(np.mean([s[m] for s in per_slide])) for m in per_slide[0]}
    return pd.DataFrame(
        {**scores, "n_cells": adata.n_obs, "n_slides": len(groups)}, index=pd.Index([pred_key], name="prediction")
    )
