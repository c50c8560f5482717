from __future__ import annotations

import numpy as np

from gearsx._utils import check_positive_int

__all__ = ["linear_probe"]


def linear_probe(x: np.ndarray, labels: np.ndarray, *, n_splits: int = 5, random_state: int = 0) -> float:
    """Cross-validated balanced accuracy of a multinomial logistic regression predicting ``labels`` from ``x``.

    ``x`` is centred and divided by one global scale, not standardised per feature:
    per-feature scaling would blow up near-constant directions (an embedding often has
    some) until noise in them separates anything, which says nothing about the
    representation a downstream model sees.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n_splits = check_positive_int(n_splits, name="n_splits", minimum=2)
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(values) < 2 or counts.min() < n_splits:
        msg = (
            f"the cross-validation needs two classes or more with at least `n_splits`={n_splits} rows each; "
            f"got {dict(zip(values.tolist(), counts.tolist(), strict=True))}. Lower `n_splits` or pass more rows."
        )
        raise ValueError(msg)
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    scale = np.sqrt((x**2).sum(1).mean() / max(x.shape[1], 1))
    x = x / scale if scale > 0 else x
    clf = LogisticRegression(max_iter=2000, random_state=random_state)
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return float(cross_val_score(clf, x, labels, cv=cv, scoring="balanced_accuracy").mean())
