"""Preprocessing: AnnData in, AnnData out (see :ref:`gears-preprocessing`)."""

from ._centering import mean_center_per_slide
from ._genes import highly_variable_genes, prepare, shared_genes
from ._patches import extract_patches

__all__ = ["extract_patches", "highly_variable_genes", "mean_center_per_slide", "prepare", "shared_genes"]
