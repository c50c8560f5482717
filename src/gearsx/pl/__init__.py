"""Plotting (matplotlib; scanpy-style signatures with ``ax``, ``show`` and ``save``)."""

from ._attention import attention, attention_summary
from ._comparison import method_comparison
from ._domains import domains
from ._reconstruction import distortion_heatmap, reconstruction, stitching_diagnostics

__all__ = [
    "attention",
    "attention_summary",
    "distortion_heatmap",
    "domains",
    "method_comparison",
    "reconstruction",
    "stitching_diagnostics",
]
