"""Numerics of intrinsic geometry: gauge fixing, alignment, targets, losses and stitching.

Array-level only (numpy / torch); nothing here reads or writes AnnData. torch is
imported inside the loss functions, so importing this module stays light.
"""

from ._anchor import AnchorMatch, fuse_anchor, match_reference, match_score, patch_residuals, shuffled
from ._gauge import gauge_fix, procrustes
from ._graph import locality_graph, neighbor_average
from ._losses import TargetBatch, collate_targets, geo_loss, gram_loss, log_stress_loss, rw_kl_loss
from ._minisets import MinisetPair, MinisetSampler
from ._stitch import StitchResult, best_overlaps, random_walk_patches, stitch_patches
from ._targets import GeometryTargets, adaptive_params, build_targets, farthest_point_sampling, knn_indices

__all__ = [
    "AnchorMatch",
    "fuse_anchor",
    "match_reference",
    "match_score",
    "shuffled",
    "patch_residuals",
    "GeometryTargets",
    "TargetBatch",
    "adaptive_params",
    "build_targets",
    "collate_targets",
    "farthest_point_sampling",
    "gauge_fix",
    "geo_loss",
    "gram_loss",
    "knn_indices",
    "locality_graph",
    "log_stress_loss",
    "neighbor_average",
    "MinisetPair",
    "MinisetSampler",
    "procrustes",
    "rw_kl_loss",
    "StitchResult",
    "best_overlaps",
    "random_walk_patches",
    "stitch_patches",
]
