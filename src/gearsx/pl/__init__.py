"""Plotting (matplotlib; scanpy-style signatures with ``ax``, ``show`` and ``save``)."""

from ._reconstruction import distortion_heatmap, reconstruction, stitching_diagnostics

__all__ = ["distortion_heatmap", "reconstruction", "stitching_diagnostics"]
