"""Scores of spatial-domain labels: agreement with a reference and spatial coherence."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from gearsx._utils import check_coords, check_positive_int
from gearsx.geometry._knn import knn_without_self

from ._evaluation import check_has_geometry

__all__ = ["domain_scores", "spatial_coherence"]


def _assigned_labels(labels, name: str) -> np.ndarray:
    """Return ``labels`` as strings, raising when one is missing (a missing label is no domain of its own)."""
    values = pd.Series(np.asarray(labels, dtype=object))
    missing = values.isna().to_numpy()
    if missing.any():
        msg = (
            f"`{name}` holds {int(missing.sum())} missing labels (NaN/None) of {len(values)}; every observation "
            "needs a label here. Subset to the labelled observations first."
        )
        raise ValueError(msg)
    return values.astype(str).to_numpy()


def spatial_coherence(labels: np.ndarray | pd.Series, spatial: np.ndarray, *, n_neighbors: int = 6) -> float:
    """Mean fraction of each point's ``n_neighbors`` nearest physical neighbours that share its label.

    1 for perfectly contiguous domains; about ``sum_k p_k^2`` (the chance of two random
    points agreeing) for labels scattered at random. ``n_neighbors=6`` is the first ring of a
    Visium hexagonal grid.

    Parameters
    ----------
    labels
        ``(n,)`` labels.
    spatial
        ``(n, d)`` coordinates.
    n_neighbors
        Neighbours per point.

    Returns
    -------
    The coherence in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> import gearsx as gx
    >>> xy = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2)
    >>> round(gx.metrics.spatial_coherence(xy[:, 0] < 10, xy, n_neighbors=4), 2)  # 40 of 400 have 1 of 4 across
    0.97
    """
    labels = _assigned_labels(labels, "labels")
    xy = check_coords(spatial, name="spatial", min_points=2)
    if len(labels) != len(xy):
        msg = f"`labels` has {len(labels)} entries but `spatial` has shape {xy.shape}."
        raise ValueError(msg)
    check_has_geometry(xy, name="spatial")
    k = check_positive_int(n_neighbors, name="n_neighbors")
    if k >= len(xy):
        msg = f"`n_neighbors` = {k} needs at least {k + 1} points; got {len(xy)}. Lower `n_neighbors`."
        raise ValueError(msg)
    idx = knn_without_self(cKDTree(xy), xy, k)[1].reshape(len(xy), k)
    return float((labels[idx] == labels[:, None]).mean())


def domain_scores(
    labels_true: np.ndarray | pd.Series,
    labels_pred: np.ndarray | pd.Series,
    *,
    spatial: np.ndarray | None = None,
    n_neighbors: int = 6,
    unlabelled: tuple[str, ...] = ("NA",),
) -> dict[str, float]:
    """Agreement of predicted domains with reference labels, plus spatial coherence.

    ARI and NMI come from :mod:`sklearn.metrics`. Observations whose reference label is
    missing (``NaN``/``None``/``pd.NA``) or one of ``unlabelled`` (e.g. the ``'NA'`` category of
    the unannotated DLPFC spots) are left out of ARI and NMI and counted in ``n_unlabelled``. With ``spatial``, the
    :func:`spatial_coherence` of the predicted labels (over all observations) is added.

    Parameters
    ----------
    labels_true
        ``(n,)`` reference labels.
    labels_pred
        ``(n,)`` predicted labels.
    spatial
        Optional ``(n, d)`` coordinates.
    n_neighbors
        Neighbours for the coherence.
    unlabelled
        Reference values that mean "no label".

    Returns
    -------
    ``{'ari', 'nmi', 'n_scored', 'n_unlabelled'[, 'coherence']}``.

    Examples
    --------
    >>> import gearsx as gx
    >>> gx.metrics.domain_scores(["a", "a", "b", "b", None], [1, 1, 0, 0, 0])["ari"]
    1.0
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t = pd.Series(list(labels_true) if not isinstance(labels_true, pd.Series) else labels_true.to_numpy())
    p = pd.Series(_assigned_labels(labels_pred, "labels_pred"))
    if len(t) != len(p):
        msg = f"`labels_true` has {len(t)} entries and `labels_pred` {len(p)}; they must match."
        raise ValueError(msg)
    ok = t.notna().to_numpy() & ~t.astype(str).isin(["nan", *unlabelled]).to_numpy()
    if ok.sum() < 2:
        msg = f"only {int(ok.sum())} observations have a reference label; at least 2 are needed."
        raise ValueError(msg)
    tt, pp = t[ok].astype(str).to_numpy(), p[ok].to_numpy()
    out = {
        "ari": float(adjusted_rand_score(tt, pp)),
        "nmi": float(normalized_mutual_info_score(tt, pp)),
        "n_scored": int(ok.sum()),
        "n_unlabelled": int((~ok).sum()),
    }
    if spatial is not None:
        out["coherence"] = spatial_coherence(p.to_numpy(), spatial, n_neighbors=n_neighbors)
    return out
