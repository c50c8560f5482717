"""Time and peak memory of `gearsx.geometry.stitch_patches` on simulated layouts.

Run: ``.venv/bin/python benchmarks/bench_stitch.py [n_cells ...]`` (default 10k, 100k, 1M).
Each size runs in a fresh subprocess so peak memory is per size. Patches of 384 cells are
cut by random walks on the true kNN graph (coverage 2), posed at random with 5% noise,
then stitched. Target (issue #4): 100k cells in under 2 minutes and 4 GB on 2 cores,
close to linear growth in N.
"""

import json
import subprocess
import sys

CHILD = r"""
import json, resource, time, sys
import numpy as np
from sklearn.neighbors import kneighbors_graph
import gearsx as gx
from gearsx.geometry import random_walk_patches, stitch_patches

n = int(sys.argv[1])
_, cells = gx.datasets.simulate_tissue(n_slides=1, n_cells_per_slide=1000, n_genes=10, n_sc_cells=n, progress=False)
xy = cells.obsm["spatial_gt"]
rng = np.random.default_rng(0)
t = time.perf_counter()
patches = random_walk_patches(kneighbors_graph(xy, 10), 384, coverage=2, random_state=0)
t_cover = time.perf_counter() - t
coords = []
for ix in patches:
    th = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    coords.append(rng.uniform(0.5, 2) * (xy[ix] + rng.normal(0, 0.05 * 24.0, (len(ix), 2))) @ rot)
t = time.perf_counter()
res = stitch_patches(patches, coords, n, random_state=0)
t_stitch = time.perf_counter() - t
rho = gx.metrics.distance_correlation(res.X, xy)
print(json.dumps({"n": n, "patches": len(patches), "cover_s": t_cover, "stitch_s": t_stitch,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, "spearman": rho}))
"""


def main(sizes):
    print(f"{'n_cells':>9} {'patches':>8} {'cover_s':>8} {'stitch_s':>9} {'peak_GB':>8} {'spearman':>9}")
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{n:>9} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['n']:>9} {r['patches']:>8} {r['cover_s']:>8.1f} {r['stitch_s']:>9.1f} "
            f"{r['peak_gb']:>8.2f} {r['spearman']:>9.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
