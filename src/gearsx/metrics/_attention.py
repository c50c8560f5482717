"""Diagnostics of attention weights against true spatial neighbours (structure module, issue #9)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from gearsx._utils import check_coords, check_positive_int
from gearsx.geometry._knn import knn_without_self

__all__ = ["attention_recall"]


def attention_recall(attention: np.ndarray, coords: np.ndarray, *, k: int = 10) -> dict[str, np.ndarray]:
    """Recall@k of true spatial neighbours among each query's top-``k`` attended points, and row entropy.

    Parameters
    ----------
    attention
        Row-stochastic weights ``(n, n)``, or ``(..., n, n)`` (e.g. heads, recycles); rows are
        queries. Self-attention is ignored (the diagonal is removed before ranking).
    coords
        True coordinates ``(n, d)``.
    k
        Neighbours per query; fewer than ``n - 1`` (with ``n - 1`` or more every point counts
        as a neighbour and the recall is 1 whatever the attention).

    Returns
    -------
    ``{'recall': (...,), 'entropy': (...,)}``: means over queries; ``entropy`` in nats of the
    rows as given (uniform attention over ``m`` points gives ``log m``).

    Examples
    --------
    >>> import numpy as np
    >>> import gearsx as gx
    >>> xy = np.random.default_rng(0).uniform(size=(50, 2))
    >>> d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    >>> att = np.exp(-d / 0.01)
    >>> att /= att.sum(1, keepdims=True)
    >>> float(gx.metrics.attention_recall(att, xy, k=5)["recall"])
    1.0
    """
    a = np.asarray(attention, dtype=np.float64)
    xy = check_coords(coords, name="coords", min_points=2)
    n = len(xy)
    if a.ndim < 2 or a.shape[-2:] != (n, n):
        msg = f"`attention` must have shape (..., {n}, {n}) to match `coords` {xy.shape}; got {a.shape}."
        raise ValueError(msg)
    if not np.isfinite(a).all() or (a < 0).any():
        msg = "`attention` must hold finite, non-negative weights (rows of a row-stochastic matrix)."
        raise ValueError(msg)
    k = check_positive_int(k, name="k")
    if k >= n - 1:
        msg = f"`k`={k} must be smaller than n - 1 = {n - 1}: every other point would count as a neighbour."
        raise ValueError(msg)
    true = knn_without_self(cKDTree(xy), xy, k)[1].reshape(n, k)
    is_true = np.zeros((n, n), dtype=bool)
    is_true[np.repeat(np.arange(n), k), true.ravel()] = True
    off = a.copy()
    idx = np.arange(n)
    off[..., idx, idx] = -np.inf
    top = np.argpartition(-off, k - 1, axis=-1)[..., :k]
    hits = np.take_along_axis(np.broadcast_to(is_true, a.shape), top, axis=-1)
    recall = hits.mean(-1).mean(-1)
    ent = -(a * np.log(np.clip(a, 1e-300, None))).sum(-1).mean(-1)
    return {"recall": recall, "entropy": ent}
