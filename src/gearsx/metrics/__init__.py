"""Evaluation metrics (pure functions on arrays or AnnData) — see :ref:`gears-evaluation`."""

from ._attention import attention_recall
from ._distortion import distortion_matrix, morton_order
from ._domains import domain_scores, spatial_coherence
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
from ._integration import coral_distance, domain_classifier_accuracy, knn_mixing, knn_overlap, mmd_rbf
from ._separability import slide_separability

__all__ = [
    "attention_recall",
    "coral_distance",
    "domain_classifier_accuracy",
    "knn_mixing",
    "knn_overlap",
    "mmd_rbf",
    "continuity",
    "distance_correlation",
    "distortion_matrix",
    "domain_scores",
    "spatial_coherence",
    "morton_order",
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
