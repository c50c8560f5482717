"""Plotting (matplotlib; scanpy-style signatures with ``ax``, ``show`` and ``save``)."""

from ._attention import attention, attention_summary
from ._domains import domains
from ._reconstruction import distortion_heatmap, reconstruction, stitching_diagnostics

__all__ = ["attention", "attention_summary", "distortion_heatmap", "domains", "reconstruction", "stitching_diagnostics"]
