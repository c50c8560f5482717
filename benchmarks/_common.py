"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/<script>.py``)."""

import threading
import time
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


class PeakRSS:
    """Peak resident memory of this process above its level at entry (GB), sampled in a thread."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.stop = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def _rss() -> float:
        with Path("/proc/self/status").open() as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024**2
        return 0.0

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.gb = self.peak - self.base
