"""Numerics of intrinsic geometry: gauge fixing, alignment, targets, losses and stitching.

Array-level only, numpy and SciPy (no torch: the training losses live in :mod:`gearsx.module`);
nothing here reads or writes AnnData.
"""

from ._anchor import AnchorMatch, fuse_anchor, match_reference, match_score, patch_residuals, shuffled
from ._cover import best_overlaps, random_walk_patches
from ._expected_distances import expected_distance, expected_distance_layout
from ._gauge import gauge_fix, procrustes
from ._gene_agreement import GeneAgreement, gene_agreement
from ._graph import locality_graph, neighbor_average, spatial_edges
from ._minisets import MinisetPair, MinisetSampler
from ._stitch import StitchResult, stitch_patches
from ._targets import GeometryTargets, adaptive_params, build_targets, farthest_point_sampling, knn_indices
from ._transport import TransportAnchors, transport_anchors

#: Training losses that moved to :mod:`gearsx.module` (torch); the old names still work, with a warning.
_MOVED_TO_MODULE = ("TargetBatch", "collate_targets", "geo_loss", "gram_loss", "log_stress_loss", "rw_kl_loss")


def __getattr__(name: str):
    if name in _MOVED_TO_MODULE:
        import importlib
        import warnings

        warnings.warn(
            f"`gearsx.geometry.{name}` moved to `gearsx.module.{name}` (gearsx.geometry is numpy-only now); "
            "the old name will be removed in a future release.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("gearsx.module"), name)
    msg = f"module 'gearsx.geometry' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "AnchorMatch",
    "fuse_anchor",
    "expected_distance",
    "expected_distance_layout",
    "GeneAgreement",
    "gene_agreement",
    "match_reference",
    "match_score",
    "shuffled",
    "TransportAnchors",
    "transport_anchors",
    "patch_residuals",
    "GeometryTargets",
    "adaptive_params",
    "build_targets",
    "farthest_point_sampling",
    "gauge_fix",
    "knn_indices",
    "locality_graph",
    "neighbor_average",
    "spatial_edges",
    "MinisetPair",
    "MinisetSampler",
    "procrustes",
    "StitchResult",
    "best_overlaps",
    "random_walk_patches",
    "stitch_patches",
]
