"""Time and peak memory of the tissue simulator and the metric suite at scale.

Run: ``.venv/bin/python benchmarks/bench_simulate.py [n_cells ...]``. Prints one line per size.
Targets (issue #2): 1,000,000 single cells simulated in under 60 s and a few GB on 2 cores;
metrics never build an N x N matrix.
"""

import resource
import sys
import time

import numpy as np

import gearsx as gx


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(sizes):
    print(f"{'n_sc_cells':>10} {'simulate_s':>10} {'metrics_s':>9} {'peak_rss_GB':>11} {'nnz_per_cell':>12}")
    for n in sizes:
        t = time.perf_counter()
        _, cells = gx.datasets.simulate_tissue(n_cells_per_slide=1000, n_sc_cells=n, random_state=0, progress=False)
        t_sim = time.perf_counter() - t
        xy = cells.obsm["spatial_gt"]
        pred = xy + np.random.default_rng(0).normal(0, 20.0, xy.shape)
        t = time.perf_counter()
        gx.metrics.evaluate_geometry(pred, xy)
        t_met = time.perf_counter() - t
        print(f"{n:>10} {t_sim:>10.1f} {t_met:>9.1f} {peak_rss_gb():>11.2f} {cells.X.nnz / n:>12.1f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
