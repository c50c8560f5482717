"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/<script>.py``)."""

from pathlib import Path

import numpy as np
import scanpy as sc

#: Real public data sets live next to the repository, never inside it.
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def lognorm(a):
    """A normalised (``normalize_total``) and log1p-transformed copy of ``a``."""
    a = a.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    return a


def band_split(xy, frac=0.6):
    """Boolean mask of the first ``frac`` of the points along the cloud's long (first principal) axis."""
    c = xy - xy.mean(0)
    proj = c @ np.linalg.svd(c, full_matrices=False)[2][0]
    return proj <= np.quantile(proj, frac)
