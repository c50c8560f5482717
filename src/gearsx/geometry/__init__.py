"""Numerics of intrinsic geometry: gauge fixing, alignment, targets, losses and stitching.

Array-level only (numpy / torch); nothing here reads or writes AnnData.
"""

from ._gauge import gauge_fix, procrustes

__all__ = ["gauge_fix", "procrustes"]
