"""Speed and memory of ``gx.tl.reconstruct`` with a trained model (issue #7 targets).

Run: ``.venv/bin/python benchmarks/bench_reconstruct.py [--cells 10000 100000] [--epochs 12] [--models DIR]``.
With ``--models DIR`` the trained encoder and GEARS are saved to (or, when present, loaded from) ``DIR``.

Trains the encoder, adapter and GEARS once on the default simulator slides, then reconstructs
single-cell sections of the requested sizes (simulated with ``n_sc_cells``) and prints, per
size: wall time of the reconstruction (graph, patches, prediction, stitching), the number of
patches, the peak resident memory above the level before the call (sampled every 0.2 s), and the metrics against the true positions.
Targets: 10,000 cells in under 60 s and 100,000 in under 10 minutes on 2 CPU cores, under 4 GB.
"""

import argparse
import time
import warnings

from _common import PeakRSS, simulated_query, simulator_models

import gearsx as gx

warnings.filterwarnings("ignore")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", default=None, help="folder to save trained models to, or load them from")
    args = parser.parse_args()
    gx.settings.progress_bar = False
    st, enc, geo = simulator_models(args.models, args.epochs)
    for n in args.cells:
        cells = simulated_query(n, st, enc)
        t = time.perf_counter()
        with PeakRSS() as mem:
            gx.tl.reconstruct(cells, geo, progress=False)
        dt = time.perf_counter() - t
        m = gx.metrics.evaluate_adata(cells, "X_gears_spatial", "spatial_gt").iloc[0]
        rec = cells.uns["gears"]["reconstruct"]
        mode = cells.uns["gears"]["anchor"]["mode"]
        print(
            f"{n:>7} cells: reconstruct {dt:6.1f} s, {rec['n_patches']} patches, {mode} mode, "
            f"peak memory above the start {mem.gb:.2f} GB | "
            f"Spearman {m['spearman']:.3f} Stress-1 {m['stress1']:.3f} edge AUC {m['edge_auc']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
