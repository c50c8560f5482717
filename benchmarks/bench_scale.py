"""Time and memory of ``gx.tl.reconstruct`` from 10k to 1M cells, in process and on a dask LocalCluster (issue #24).

Run: ``.venv/bin/python benchmarks/bench_scale.py [--cells 10000 100000 1000000] [--executors in-process cluster]
[--anchor none reference] [--anchor-weight W] [--models DIR] [--out benchmarks/results/scale.md]``.

Trains the encoder and GEARS once on the default simulator slides (or loads them from ``--models``),
then, per size, simulates a single-cell section of that many cells, adapts it and reconstructs it
with the defaults, once per executor and anchoring mode:

* ``in-process``: everything in this process;
* ``cluster``: the patch predictions (and, with ``--communities``, the stitch of each community of
  patches) as tasks on a ``distributed.LocalCluster`` of 2 worker processes with one thread each
  (``gx.tl.reconstruct(..., client=client)``); the rest in this process.

Reported per run: wall time of ``gx.tl.reconstruct``, peak resident memory above the level before the
call (this process plus, for ``cluster``, its worker processes; sampled every 0.2 s), and the
metrics against the simulator's true positions; the cluster run's largest coordinate difference from
the in-process run at the same seed. Quality above 10k cells is held against the same model and mode
on ``--subsets`` random 10k subsets of the same cells (``spearman, 10k subsets``, and the gap from their
mean to the full run).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _common import PeakRSS, simulated_query, simulator_models

import gearsx as gx

warnings.filterwarnings("ignore")
OUT = Path(__file__).resolve().parent / "results" / "scale.md"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--executors", nargs="+", default=["in-process", "cluster"], choices=["in-process", "cluster"])
    parser.add_argument("--anchor", nargs="+", default=["none", "reference"], choices=["none", "reference", "auto"])
    parser.add_argument(
        "--anchor-weight", type=float, default=None,
        help="`anchor_weight` of the anchored runs (default: gx.tl.reconstruct's; 0 skips the intrinsic layout)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", default=None, help="folder to save trained models to, or load them from")
    parser.add_argument("--subsets", type=int, default=3, help="random 10k subsets the quality is held against")
    parser.add_argument(
        "--communities", type=int, default=None,
        help="stitch this many communities of patches separately (as tasks on the cluster for `cluster`)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    gx.settings.progress_bar = False
    st, enc, geo = simulator_models(args.models, args.epochs)
    client = None
    if "cluster" in args.executors:
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None))
    rows = []
    weight = {} if args.anchor_weight is None else {"anchor_weight": args.anchor_weight}
    for n in args.cells:
        cells = simulated_query(n, st, enc)
        for mode in args.anchor:
            here = None
            for executor in args.executors:
                run = cells.copy()
                t = time.perf_counter()
                with PeakRSS(children=executor == "cluster") as mem:
                    gx.tl.reconstruct(
                        run,
                        geo,
                        anchor=None if mode == "none" else mode,
                        **({} if mode == "none" else weight),
                        client=client if executor == "cluster" else None,
                        n_communities=args.communities,
                        progress=False,
                    )
                dt = time.perf_counter() - t
                m = gx.metrics.evaluate_adata(run, "X_gears_spatial", "spatial_gt").iloc[0]
                xy = run.obsm["X_gears_spatial"]
                diff = "" if here is None else f"{float(np.abs(xy - here).max()):.1e}"
                here = xy if here is None else here
                row = {
                    "cells": n,
                    "anchor": mode,
                    "mode used": run.uns["gears"]["anchor"]["mode"],
                    # the weight of the intrinsic offsets, used only where the run anchored
                    "anchor_weight": (
                        run.uns["gears"]["reconstruct"]["params"]["anchor_weight"]
                        if run.uns["gears"]["anchor"]["mode"] == "reference"
                        else "-"
                    ),
                    "executor": executor,
                    "time (s)": round(dt, 1),
                    "peak mem (GB)": round(mem.gb, 2),
                    "patches": run.uns["gears"]["reconstruct"]["n_patches"],
                    "stitch communities": args.communities or 1,
                    "spearman": round(float(m["spearman"]), 3),
                    "stress1": round(float(m["stress1"]), 3),
                    "edge_auc": round(float(m["edge_auc"]), 3),
                    "max |diff| to in-process": diff,
                    "seconds per step": ", ".join(
                        f"{k} {v:.0f}" for k, v in run.uns["gears"]["reconstruct"]["seconds"].items()
                    ),
                }
                if n > 10_000 and executor == "in-process" and args.subsets:
                    # the same model and protocol on random 10k subsets of these cells (the yardstick);
                    # one subset's score varies by about 0.01, so several are drawn
                    scores = []
                    for draw in range(args.subsets):
                        pick = np.sort(np.random.default_rng(draw).choice(n, 10_000, replace=False))
                        sub = cells[pick].copy()
                        how = {"anchor": None} if mode == "none" else {"anchor": mode, **weight}
                        gx.tl.reconstruct(sub, geo, **how, progress=False)
                        ms = gx.metrics.evaluate_adata(sub, "X_gears_spatial", "spatial_gt").iloc[0]
                        scores.append(float(ms["spearman"]))
                    row["spearman, 10k subsets"] = " / ".join(f"{v:.3f}" for v in scores)
                    row["gap to their mean"] = round(float(np.mean(scores)) - row["spearman"], 3)
                rows.append(row)
                print(row, flush=True)
                del run
        del cells
    if client is not None:
        client.close()
    import pandas as pd

    table = pd.DataFrame(rows)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(
        "# Scale: `gx.tl.reconstruct` from 10k to 1M cells (benchmarks/bench_scale.py, 2-core CPU machine)\n\n"
        "Trained once on the simulator's ST slides; query cells simulated from the same tissue. Time: wall time of "
        "`gx.tl.reconstruct`. Peak memory: resident memory above the level before the call (for `cluster`, this "
        "process and its 2 worker processes). `max |diff|`: largest coordinate difference from the in-process run "
        "at the same seed.\n\n" + table.to_markdown(index=False) + "\n"
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
