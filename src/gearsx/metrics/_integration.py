"""Diagnostics of embeddings: spatial locality and mixing of batches or domains (see :ref:`gears-encoder` and :ref:`gears-adapter`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gearsx._utils import as_rng, check_coords, check_positive_int, plain
from gearsx.geometry._knn import knn

from ._evaluation import check_has_geometry
from ._probe import linear_probe

__all__ = ["coral_distance", "domain_classifier_accuracy", "knn_mixing", "knn_overlap", "mmd_rbf"]


#: Tolerance of "as far as the ``k``-th physical neighbour" in :func:`knn_overlap`, relative to that
#: distance and to the coordinates' magnitude (rounding of two ways of computing one distance).
_TIE = 1e-9


def _two_sets(a, b, min_points: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Return ``a`` and ``b`` as finite float arrays with the same columns (one feature space), else raise."""
    a, b = check_coords(a, name="a", min_points=min_points), check_coords(b, name="b", min_points=min_points)
    if a.shape[1] != b.shape[1]:
        msg = f"`a` and `b` must live in the same space; got {a.shape[1]} and {b.shape[1]} columns."
        raise ValueError(msg)
    return a, b


def knn_overlap(embedding: np.ndarray, coords: np.ndarray, *, k: int = 20, groups: np.ndarray | None = None) -> float:
    """Mean fraction of each cell's ``k`` physical neighbours that are also its ``k`` embedding neighbours.

    Neighbours are searched within each group (slide) when ``groups`` is given. 1 means
    the embedding's neighbourhoods are the physical ones; about ``k / n`` is chance. An embedding
    neighbour counts when it is no farther from the cell, physically, than the cell's ``k``-th
    physical neighbour: on a lattice (a Visium or ST grid) several spots lie at that distance, and
    which of them make the ``k`` nearest is an accident of rounding and of the search's order, so
    all of them count. Without ties this is the plain overlap of the two ``k``-neighbour sets.

    Parameters
    ----------
    embedding
        ``(n, d)`` embedding of the cells (e.g. ``obsm['X_gears']``).
    coords
        ``(n, 2)`` or ``(n, 3)`` physical coordinates of the same cells.
    k
        Neighbours per cell (fewer than the cells of every group).
    groups
        Optional ``(n,)`` group (slide) of every cell.

    Returns
    -------
    The mean overlap in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> xy = np.random.default_rng(0).uniform(size=(200, 2))
    >>> gx.metrics.knn_overlap(xy, xy, k=10)
    1.0
    """
    z = check_coords(embedding, name="embedding")
    xy = check_coords(coords, name="coords")
    k = check_positive_int(k, name="k")
    if len(z) != len(xy):
        msg = f"`embedding` and `coords` must have the same rows; got {len(z)} and {len(xy)}."
        raise ValueError(msg)
    labels = np.zeros(len(z), dtype=int) if groups is None else np.asarray(groups)
    if len(labels) != len(z):
        msg = f"`groups` has {len(labels)} entries but `embedding` has {len(z)} rows; pass one group per cell."
        raise ValueError(msg)
    missing = pd.isna(labels)
    if missing.any():  # NaN equals nothing, itself included: such cells formed groups of none
        msg = f"`groups` is missing (NaN or None) for {int(missing.sum())} of {len(labels)} cells; give every cell a group."
        raise ValueError(msg)
    total, count = 0.0, 0
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        if len(idx) <= k:
            msg = f"Group {plain(g)!r} has {len(idx)} cells; knn_overlap with k={k} needs more than k."
            raise ValueError(msg)
        pos = xy[idx]
        check_has_geometry(pos, name="coords" if groups is None else f"coords` of group `{plain(g)}")
        a, kth = knn(z[idx], k)[0], knn(pos, k)[1][:, -1]
        near = np.linalg.norm(pos[a] - pos[:, None], axis=-1)  # physical distance to each embedding neighbour
        hits = (near <= kth[:, None] * (1 + _TIE) + _TIE * max(float(np.abs(pos).max()), 1.0)).sum(1)
        total += hits.sum() / k
        count += len(idx)
    return float(total / count)


def domain_classifier_accuracy(a: np.ndarray, b: np.ndarray, *, n_splits: int = 5, random_state: int = 0) -> float:
    """Balanced accuracy of a cross-validated logistic regression telling rows of ``a`` from rows of ``b``.

    0.5 means the two sets are linearly indistinguishable. Features are centred and
    scaled by one global factor (see the note in :func:`slide_separability`).

    Parameters
    ----------
    a, b
        ``(n_a, d)`` and ``(n_b, d)`` embeddings of two sets (e.g. spots and adapted cells).
    n_splits
        Stratified folds (at least 2; each set needs as many rows).
    random_state
        Seed of the folds.

    Returns
    -------
    The mean balanced accuracy over the ``n_splits`` folds.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))
    >>> round(gx.metrics.domain_classifier_accuracy(a, b), 1)  # same distribution: chance
    0.5
    >>> bool(gx.metrics.domain_classifier_accuracy(a, b + 1.0) > 0.8)  # shifted: told apart
    True
    """
    a, b = _two_sets(a, b)
    y = np.repeat(np.array(["a", "b"]), [len(a), len(b)])  # named as the arguments, for linear_probe's messages
    return linear_probe(np.vstack([a, b]), y, n_splits=n_splits, random_state=random_state)


def coral_distance(a: np.ndarray, b: np.ndarray) -> float:
    """CORAL distance ``||C_a - C_b||_F^2 / (4 d^2)`` between the covariances of two sets (2 rows each at least).

    The quantity the SC adapter's CORAL loss lowers (:cite:p:`Sun2016`).

    Parameters
    ----------
    a, b
        ``(n_a, d)`` and ``(n_b, d)`` embeddings of two sets.

    Returns
    -------
    The distance; ``0`` when the two covariances are equal.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))
    >>> round(gx.metrics.coral_distance(a, a + 3.0), 6)  # a shift leaves the covariance
    0.0
    >>> bool(gx.metrics.coral_distance(a, 3 * b) > 100 * gx.metrics.coral_distance(a, b))
    True
    """
    a, b = _two_sets(a, b, min_points=2)  # one row has no covariance
    d = a.shape[1]
    return float(((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2).sum() / (4 * d * d))


def mmd_rbf(a: np.ndarray, b: np.ndarray, *, max_points: int = 2000, random_state: int = 0) -> float:
    """Biased squared MMD with a Gaussian kernel (median-heuristic bandwidth) on at most ``max_points`` rows each.

    Parameters
    ----------
    a, b
        ``(n_a, d)`` and ``(n_b, d)`` embeddings of two sets.
    max_points
        Rows used per set at most, at least 2 (a seeded sample above it; the kernel matrix is dense).
    random_state
        Seed of the samples.

    Returns
    -------
    The squared MMD; near ``0`` when the two sets are drawn from one distribution.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))
    >>> bool(gx.metrics.mmd_rbf(a, b + 1.0) > 10 * gx.metrics.mmd_rbf(a, b))
    True
    """
    from scipy.spatial.distance import cdist

    a, b = _two_sets(a, b)
    # one row a side has no distribution: its biased MMD is 2 - 2 k(a, b), a distance, not a discrepancy
    max_points = check_positive_int(max_points, name="max_points", minimum=2)
    rng = as_rng(random_state)
    a = a[rng.choice(len(a), min(len(a), max_points), replace=False)]
    b = b[rng.choice(len(b), min(len(b), max_points), replace=False)]
    xy = np.vstack([a, b])
    d2 = cdist(xy, xy, "sqeuclidean")
    if not (d2 > 0).any():  # every row of both sets is one point: the same distribution, whatever the bandwidth
        return 0.0
    k = np.exp(-d2 / np.median(d2[d2 > 0]))
    n = len(a)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


def knn_mixing(
    a: np.ndarray, b: np.ndarray, *, k: int = 30, max_points: int = 5000, random_state: int = 0
) -> dict[str, float]:
    """Mixing of two sets in their joint kNN graph: label entropy and iLISI.

    Both sets are subsampled to the same size (at most ``max_points``) so that perfect
    mixing has an expected neighbour share of one half. For each point, the share ``p``
    of its ``k`` neighbours from set ``b`` gives the entropy ``H(p)`` in bits (1 = perfectly
    mixed) and the inverse Simpson index ``1 / (p^2 + (1-p)^2)`` (the iLISI of two
    batches, computed on a plain kNN graph rather than LISI's perplexity-weighted one;
    1 = separated, 2 = mixed).

    Parameters
    ----------
    a, b
        ``(n_a, d)`` and ``(n_b, d)`` embeddings of two sets (e.g. spots and adapted cells).
    k
        Neighbours per point in the joint graph (fewer than twice the subsample).
    max_points
        Points per set at most (a seeded sample above it).
    random_state
        Seed of the samples.

    Returns
    -------
    ``{'mixing_entropy': ..., 'ilisi': ...}`` (means over points).

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    >>> round(gx.metrics.knn_mixing(a, b + 100, k=10)["ilisi"], 2)  # far apart: separated
    1.0
    """
    a, b = _two_sets(a, b)
    k = check_positive_int(k, name="k")
    rng = as_rng(random_state)
    m = min(len(a), len(b), max_points)
    if k >= 2 * m:
        msg = (
            f"`k` = {k} neighbours need more than {k} points in all, but the two sets give {2 * m} "
            f"({m} a side, the smaller set's size); lower `k` below {2 * m}."
        )
        raise ValueError(msg)
    x = np.vstack([a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]])
    label = np.r_[np.zeros(m), np.ones(m)]
    # rows in a random order: a neighbour search takes tied points (duplicates) in row order, which
    # would put every point's twin of its own set first
    shuffle = rng.permutation(2 * m)
    x, label = x[shuffle], label[shuffle]
    p = label[knn(x, k)[0]].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nan_to_num(p * np.log2(p)) - np.nan_to_num((1 - p) * np.log2(1 - p))
    return {"mixing_entropy": float(h.mean()), "ilisi": float((1.0 / (p**2 + (1 - p) ** 2)).mean())}
