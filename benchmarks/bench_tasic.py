"""Tasic 2016 scRNA-seq onto the seqFISH visual cortex: do the dissection layers land in order? (issue #21).

Run: ``pip install --group bench -e .`` once, then ``.venv/bin/python benchmarks/bench_tasic.py --seeds 0 1 2``.
Writes ``benchmarks/results/tasic_seqfish.md``.

The seqFISH section (Zhu et al. 2018, 1,597 cells) is the reference, every cell a "spot"; the
Tasic et al. (2016) cells are the query (same 113 genes). Each Tasic cell carries the layer it was
microdissected from. The section's long axis runs through the cortical depth (oriented so that its
oligodendrocytes, a white-matter type, sit at the deep end). Score: |Spearman| between the layer rank
(L1, L1-L2/3, L4, L5, L6/L6a, L6b) and each layer's mean position on that axis, on all cells with a
layer and on glutamatergic neurons alone; cells dissected as 'All', 'upper' or 'lower' are left out.
With six ranks that score moves in steps of 0.057 and its layer means rest on as few as 7 cells, so
two finer figures go beside it: its SD when each layer's cells are resampled (the placements fixed),
and the same |Spearman| over the cells themselves (each cell's layer rank against its own depth).
Methods as in ``bench_peers.py`` (gearsx with its defaults, the kNN probe, the regression probe,
novoSpaRc, Tangram, moscot), plus random placement (each cell at a random reference cell). Each
anchored gearsx run also scores its anchors, ``obsm['X_gears_anchor']`` (row ``gearsx-anchors``, same
run and time): the readout the docs recommend for a group's mean position.
"""

import argparse
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _common import (
    DATA,
    PeakRSS,
    add_append_option,
    as_number,
    first_table,
    mean_sd_markdown,
    precise_rows,
    write_precise_rows,
    write_results,
)
from bench_peers import run_gearsx, run_knn_probe, run_moscot, run_novosparc, run_regression_probe, run_tangram
from scipy.stats import spearmanr

import gearsx as gx

warnings.filterwarnings("ignore")
OUT = Path(__file__).resolve().parent / "results" / "tasic_seqfish.md"
METHODS = ("gearsx", "knn-probe", "regression-probe", "novosparc", "tangram", "moscot", "random")
#: rows a method's run writes besides its own: the anchors of an anchored gearsx run
EXTRA_ROWS = {"gearsx": ("gearsx-anchors",)}
LAYER_RANK = {"L1": 0, "L1-L2/3": 1, "L4": 2, "L5": 3, "L6": 4, "L6a": 4, "L6b": 5}


def _rows_of(methods) -> list[str]:
    """Return the table rows that running ``methods`` writes, in order (each method, then its extra rows)."""
    return [row for method in methods for row in (method, *EXTRA_ROWS.get(method, ()))]


def _ranked_depths(pos, obs, centre, axis, subset=None) -> tuple[np.ndarray, np.ndarray]:
    """Layer rank and depth along ``axis`` of each cell with a dissection layer (within ``subset``)."""
    label = obs["layer_dissection"].astype(str)
    keep = label.isin(list(LAYER_RANK)).to_numpy()
    if subset is not None:
        keep = keep & subset  # not in place: under pandas 3 to_numpy() gives a read-only view
    depth = (np.asarray(pos) - centre) @ axis
    return label[keep].map(LAYER_RANK).to_numpy(), depth[keep]


def layer_order(pos, obs, centre, axis, subset=None) -> float:
    """|Spearman| between the dissection-layer rank and each layer's mean depth."""
    rank, depth = _ranked_depths(pos, obs, centre, axis, subset)
    means = pd.Series(depth).groupby(rank).mean()
    return float(abs(spearmanr(means.index, means.to_numpy())[0]))


def cell_order(pos, obs, centre, axis, subset=None) -> float:
    """|Spearman| between each cell's dissection-layer rank and its own depth (every cell counts, not six means)."""
    return float(abs(spearmanr(*_ranked_depths(pos, obs, centre, axis, subset))[0]))


def layer_order_sd(pos, obs, centre, axis, subset=None, n_boot=200, random_state=0) -> float:
    """SD of :func:`layer_order` when each layer's cells are resampled with replacement (the placements fixed).

    How much the score of six means moves with which cells happened to be dissected: the layers hold
    7-222 glutamatergic cells each, and a layer mean of 7 cells is a coarse estimate.
    """
    rank, depth = _ranked_depths(pos, obs, centre, axis, subset)
    groups = [depth[rank == r] for r in np.unique(rank)]
    rng = np.random.default_rng(random_state)
    scores = [
        abs(spearmanr(np.arange(len(groups)), [rng.choice(g, len(g)).mean() for g in groups])[0]) for _ in range(n_boot)
    ]
    return float(np.std(scores))


def _with_previous_rows(args, rows):
    """Add the existing page's per-seed rows that this run did not recompute (``--append``), ordered by seed and method."""
    kept, n_precise = [], 0
    rerun = set(_rows_of(args.methods))
    precise = precise_rows(args.out, ["seed", "method"])
    for old in first_table(args.out):
        seed, method = int(old["seed"]), old["method"]
        if seed in args.seeds and method in rerun:
            continue
        row = {"seed": seed, "method": method}
        row.update({k: as_number(v) for k, v in old.items() if k not in ("seed", "method", "gearsx mode")})
        full = precise.get((str(seed), method))
        if full is not None:  # the page rounds to three decimals
            row.update({k: float(full[k]) for k in row if k not in ("seed", "method") and k in full})
            n_precise += 1
        if old.get("gearsx mode", "nan") != "nan":
            row["gearsx mode"] = old["gearsx mode"]
        kept.append(row)
    print(f"--append: kept {len(kept)} rows of {args.out} ({n_precise} at full precision from its .csv)", flush=True)
    rank = {m: i for i, m in enumerate(_rows_of(METHODS))}
    return sorted(kept + rows, key=lambda r: (r["seed"], rank.get(r["method"], len(rank))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", type=Path, default=OUT)
    add_append_option(parser)
    args = parser.parse_args()
    gx.settings.progress_bar = False
    folder = DATA / "seqfish_mouse_visualcortex"
    if not (folder / "tasic2016_scrna_reference.h5ad").exists():
        print(f"data not found under {folder}; nothing to do")
        return
    ref = ad.read_h5ad(folder / "seqfish_visualcortex_zhu2018.h5ad")
    cells = ad.read_h5ad(folder / "tasic2016_scrna_reference.h5ad")
    xy = np.asarray(ref.obsm["spatial"], float)
    centre = xy.mean(0)
    axis = np.linalg.svd(xy - centre, full_matrices=False)[2][0]
    oligo = ref.obs["cell_type"].str.startswith("Oligodendrocyte").to_numpy()
    if ((xy[oligo] - centre) @ axis).mean() < 0:
        axis = -axis
    glut = (cells.obs["cell_type"] == "Glutamatergic Neuron").to_numpy()
    runners = {
        "gearsx": run_gearsx,
        "knn-probe": run_knn_probe,
        "regression-probe": run_regression_probe,
        "novosparc": run_novosparc,
        "tangram": run_tangram,
        "moscot": run_moscot,
        "random": lambda spots, query, seed: xy[np.random.default_rng(seed).integers(0, len(xy), query.n_obs)],
    }
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            t = time.perf_counter()
            try:
                with PeakRSS() as mem:
                    pos = runners[method](ref.copy(), cells.copy(), seed)
            except Exception as err:  # noqa: BLE001 - a failing peer is reported, not fatal
                print(f"{method} seed {seed}: failed: {err!r}", flush=True)
                continue
            dt = time.perf_counter() - t
            placed = {method: pos}
            if method == "gearsx" and "X_gears_anchor" in run_gearsx.last.obsm:
                placed["gearsx-anchors"] = run_gearsx.last.obsm["X_gears_anchor"]
            for name, where in placed.items():
                row = {
                    "seed": seed,
                    "method": name,
                    "all cells": layer_order(where, cells.obs, centre, axis),
                    "glutamatergic": layer_order(where, cells.obs, centre, axis, glut),
                    "glutamatergic, resampled SD": layer_order_sd(
                        where, cells.obs, centre, axis, glut, random_state=seed
                    ),
                    "all cells, per cell": cell_order(where, cells.obs, centre, axis),
                    "glutamatergic, per cell": cell_order(where, cells.obs, centre, axis, glut),
                    "time (s)": dt,
                    "peak mem (GB)": mem.gb,
                }
                if name.startswith("gearsx"):
                    row["gearsx mode"] = run_gearsx.last.uns["gears"]["anchor"]["mode"]
                rows.append(row)
                print(row, flush=True)
    if args.append:
        rows = _with_previous_rows(args, rows)
    table = pd.DataFrame(rows)
    scores = ["all cells", "glutamatergic", "glutamatergic, resampled SD", "all cells, per cell"]
    cols = [*scores, "glutamatergic, per cell", "time (s)"]
    write_precise_rows(args.out, rows, ["seed", "method", *cols, "peak mem (GB)", "gearsx mode"])
    summary = mean_sd_markdown(table, "method", cols)
    write_results(
        args.out,
        "# Tasic 2016 scRNA-seq onto the seqFISH visual cortex: dissection-layer order "
        "(benchmarks/bench_tasic.py, 2-core CPU machine)\n\n"
        "|Spearman| between the dissection-layer rank and each layer's mean position on the reference's "
        "cortical-depth axis (higher is better; 1 = every layer in order). *Resampled SD*: the SD of the "
        "glutamatergic score when each layer's cells are resampled with replacement (placements fixed). "
        "*Per cell*: |Spearman| between each cell's layer rank and its own depth.\n\n"
        + table.round(3).to_markdown(index=False)
        + f"\n\nMean ± SD over seeds {sorted(table['seed'].unique().tolist())}:\n\n"
        + summary,
        appendable=True,  # the script's --append keeps earlier runs' rows
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
