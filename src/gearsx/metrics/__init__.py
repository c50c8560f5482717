"""Evaluation metrics (pure functions on arrays or AnnData) — METHOD §7."""

from ._geometry import (
    continuity,
    distance_correlation,
    edge_scores,
    evaluate_adata,
    evaluate_geometry,
    knn_distance_w1,
    shell_f1,
    sliced_wasserstein,
    stress1,
    trustworthiness,
)
from ._separability import slide_separability

__all__ = [
    "continuity",
    "distance_correlation",
    "edge_scores",
    "evaluate_adata",
    "evaluate_geometry",
    "knn_distance_w1",
    "shell_f1",
    "slide_separability",
    "sliced_wasserstein",
    "stress1",
    "trustworthiness",
]
