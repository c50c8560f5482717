"""Small queries: how much neighbour averaging (``smooth_k``) a query of 60-500 cells can take.

Run: ``.venv/bin/python benchmarks/bench_small_query.py [--sets simulator seqfish merfish xenium]
[--seeds 0 1] [--reps 3]``. Writes ``benchmarks/results/small_query.md``.

``gx.tl.reconstruct`` averages each cell's embedding with its nearest neighbours before the patches
are predicted (``smooth_k``). A fixed 50 was measured on queries of 639-5,000 cells; on a plate of a
hundred cells it averages over half the query. This script measures the intrinsic layout
(``anchor=None``, the mode the average shapes; anchored layouts take the anchors from each cell's own
embedding) on random subsets of a query, per subset size ``n``, with ``smooth_k`` at 1, ``n // 25``,
the default (``n // 12`` below 600 cells, at most 50), ``n // 6`` and 50. The anchored default is
also scored against ``smooth_k=50``.

Per set and seed, one model is trained:

* ``simulator``: the default simulator slides (``_common.simulator_models``) and 2,000 simulated
  cells of the same tissue;
* real sets: the same-tissue split of ``bench_peers.py`` (half of a section's cells make the spots,
  the other half is the query; encoder, adapter and GEARS as its gearsx runner).

Then ``--reps`` random subsets of each size are drawn from the adapted query and reconstructed with
each ``smooth_k`` (the subsets are cut from the embeddings adapted on the whole query, so only the
reconstruction sees the small query). Scores: Spearman and edge ROC-AUC against the true positions
(``k=5``: trustworthiness needs ``n > 2k``), mean ± SD over seeds and subsets.

``--few`` measures instead what the intrinsic layout cannot take, queries of 2-250 cells placed on the
anchors alone (``anchor="reference", anchor_weight=0``), and writes ``results/few_cells.md``. The same
cells are placed once among the whole query; per size, random subsets (about 200 cells in all, at
least three) are placed on their own, and the page reports their uncertainty against the same cells'
among the whole query (median ratio), how well it ranks their position errors (Spearman, pooled over
the subsets; the same cells' among the whole query beside it), their median error against the same
cells' among the whole query, and the match score (mean ± SD over the subsets).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import mean_sd_markdown, simulated_query, simulator_models, write_results
from bench_peers import _embed, load, make_spots, train_gears

import gearsx as gx

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (60, 120, 250, 500)
#: Query sizes of ``--few`` (anchors alone).
FEW_SIZES = (2, 4, 8, 16, 32, 64, 250)
#: ``obsm`` key of the true positions, under a name no gearsx function reads.
TRUTH = "benchmark_truth"


def averages(n: int) -> dict[str, int | None]:
    """The ``smooth_k`` settings compared on ``n`` cells, by label (``None``: the default)."""
    return {"1": 1, "n // 25": max(1, n // 25), "default": None, "n // 6": n // 6, "50": 50}


def models(name: str, seed: int):
    """(adapted query with the true positions in ``obsm[TRUTH]``, trained GEARS), or None without the data."""
    if name == "simulator":
        st, enc, geo = simulator_models(None)
        cells = simulated_query(2000, st, enc)
        cells.obsm[TRUTH] = np.asarray(cells.obsm.pop("spatial_gt"), float)
        return cells, geo
    parts = load(name, "same-tissue", seed)
    if parts is None:
        return None
    train, held = parts
    query = held.copy()
    del query.obsm["spatial"]  # expression only, as in bench_peers.py
    st, cells = _embed(make_spots(train), query, seed)
    geo = train_gears(st, seed)
    cells.obsm[TRUTH] = np.asarray(held.obsm["spatial"], float)
    return cells, geo


def score(cells, geo, idx, *, smooth_k, anchor, rep) -> dict[str, float]:
    """Reconstruct the subset ``idx`` at ``smooth_k`` and score it against the true positions."""
    a = cells[idx].copy()
    gx.tl.reconstruct(a, geo, anchor=anchor, smooth_k=smooth_k, progress=False, random_state=rep)
    m = gx.metrics.evaluate_geometry(a.obsm["X_gears_spatial"], a.obsm[TRUTH], k=5)
    return {
        "spearman": m["spearman"],
        "edge_auc": m["edge_auc"],
        "smooth_k_used": a.uns["gears"]["reconstruct"]["params"]["smooth_k"],
    }


def few(cells, geo, name: str, seed: int) -> list[dict]:
    """Rows of ``--few``: subsets of :data:`FEW_SIZES` cells placed on the anchors alone, against the whole query."""
    from scipy.stats import spearmanr

    anchors_alone = {"anchor": "reference", "anchor_weight": 0, "progress": False}
    whole = cells.copy()
    gx.tl.reconstruct(whole, geo, **anchors_alone)
    u_whole = whole.obs["gears_uncertainty"].to_numpy()
    err_whole = np.linalg.norm(whole.obsm["X_gears_spatial"] - whole.obsm[TRUTH], axis=1)
    rows = []
    for n in FEW_SIZES:
        rng = np.random.default_rng([seed, n])
        u, uw, err, ew, scores = [], [], [], [], []
        for rep in range(max(3, 200 // n)):
            idx = np.sort(rng.choice(cells.n_obs, n, replace=False))
            a = cells[idx].copy()
            gx.tl.reconstruct(a, geo, random_state=rep, **anchors_alone)
            u.append(a.obs["gears_uncertainty"].to_numpy())
            err.append(np.linalg.norm(a.obsm["X_gears_spatial"] - a.obsm[TRUTH], axis=1))
            uw.append(u_whole[idx])
            ew.append(err_whole[idx])
            scores.append(a.uns["gears"]["anchor"]["match_score"])
        u, uw, err, ew = map(np.concatenate, (u, uw, err, ew))
        rows.append({
            "data": name, "seed": seed, "cells": n, "subsets": len(scores),
            "uncertainty / whole query's": float(np.median(u / uw)),
            "rho(uncertainty, error)": float(spearmanr(u, err)[0]),
            "rho, whole query": float(spearmanr(uw, ew)[0]),
            "median error / whole query's": float(np.median(err) / np.median(ew)),
            "match score": float(np.mean(scores)),
            "match score SD": float(np.std(scores)),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def few_page(rows: list[dict], args) -> str:
    """The ``--few`` results page."""
    table = pd.DataFrame(rows)
    cols = [c for c in table.columns if c not in ("data", "seed", "cells", "subsets")]
    return (
        "# A handful of cells: queries of 2-250 cells placed on the anchors alone\n\n"
        f"`bench_small_query.py --few --sets {' '.join(args.sets)} --seeds {' '.join(map(str, args.seeds))}`, "
        f"{time.strftime('%Y-%m-%d')}, 2-core CPU. `anchor='reference', anchor_weight=0`. Per size, random "
        "subsets of the query (about 200 cells in all, at least three subsets) are placed on their own and "
        "compared with the same cells placed among the whole query: the median ratio of their "
        "uncertainties, the Spearman correlation of the uncertainty with the position error (pooled over the "
        "subsets; the whole query's for the same cells beside it), the ratio of the median errors, and the "
        "match score (mean and SD over the subsets). Mean ± SD over seeds.\n\n"
        + mean_sd_markdown(table, ["data", "cells"], cols)
        + "\n"
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=["simulator", "seqfish", "merfish", "xenium"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--few", action="store_true", help="queries of 2-250 cells on the anchors alone")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or RESULTS / ("few_cells.md" if args.few else "small_query.md")
    gx.settings.progress_bar = False
    rows = []
    t0 = time.perf_counter()
    for name in args.sets:
        for seed in args.seeds if name != "simulator" else args.seeds[:1]:  # one simulator model
            built = models(name, seed)
            if built is None:
                print(f"{name}: data not found, skipped", flush=True)
                break
            cells, geo = built
            if args.few:
                rows += few(cells, geo, name, seed)
                continue
            rng = np.random.default_rng(seed)
            for n in SIZES:
                for rep in range(args.reps):
                    idx = np.sort(rng.choice(cells.n_obs, n, replace=False))
                    settings = [(label, k, None) for label, k in averages(n).items()]
                    settings += [("anchored default", None, "reference"), ("anchored 50", 50, "reference")]
                    for label, k, anchor in settings:
                        m = score(cells, geo, idx, smooth_k=k, anchor=anchor, rep=rep)
                        rows.append({"data": name, "cells": n, "smooth_k": label, "seed": seed, "rep": rep, **m})
                print(f"{name} seed {seed}: {n} cells done ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.few:
        text = few_page(rows, args)
        write_results(out, text)
        print(text)
        return
    table = pd.DataFrame(rows)
    used = table[table["smooth_k"] == "default"].groupby("cells")["smooth_k_used"].first()
    text = (
        "# Small queries: the neighbour average (`smooth_k`) on 60-500 cells\n\n"
        f"`bench_small_query.py --sets {' '.join(args.sets)} --seeds {' '.join(map(str, args.seeds))} "
        f"--reps {args.reps}`, {time.strftime('%Y-%m-%d')}, 2-core CPU. Intrinsic layouts (`anchor=None`) "
        "unless the row says anchored; mean ± SD over seeds and random subsets. The default's `smooth_k` per "
        "size: "
        + ", ".join(f"{n} cells -> {int(k)}" for n, k in used.items())
        + ".\n\n"
        + mean_sd_markdown(table, ["data", "cells", "smooth_k"], ["spearman", "edge_auc"])
        + "\n"
    )
    write_results(out, text)
    print(text)


if __name__ == "__main__":
    main()
