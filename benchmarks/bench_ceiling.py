"""How far a single cell's expression can place it: supervised models given the true positions (#21).

Run: ``.venv/bin/python benchmarks/bench_ceiling.py --seeds 0 1 2 [--sets ...]``. Writes
``benchmarks/results/ceiling.md``.

The same-tissue splits of ``bench_peers.py`` (``load(name, "same-tissue", seed)``: one half of a
section's cells, the other half as the query, or the adjacent MERFISH section as the query; at most
5,000 query cells, the same seeded subsample), but the models learn from the *single cells* of the
first half with their *true positions*, which no mapping method gets (they see spots):

* ``gbm-cells``: scikit-learn's ``HistGradientBoostingRegressor`` (300 iterations), one per
  coordinate, on the log-normalised expression;
* ``knn-cells``: the distance-weighted mean position of the 10 nearest training cells in 50
  principal components of the same expression.

Their scores estimate how much of a cell's position its profile holds on each panel: a mapping
method working from spots of the same cells should not be expected to do better. It is an estimate,
not a bound (a method could also use how the cells relate to each other).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import dense_x, lognorm, mean_sd_markdown, write_results
from bench_peers import boosted_trees, load, subsample

import gearsx as gx

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("spearman", "stress1", "edge_auc")


def knn_cells(x_train, xy_train, x_query, seed):
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsRegressor

    pca = PCA(n_components=min(50, x_train.shape[1] - 1), random_state=seed).fit(x_train)
    model = KNeighborsRegressor(n_neighbors=10, weights="distance").fit(pca.transform(x_train), xy_train)
    return model.predict(pca.transform(x_query))


MODELS = {"gbm-cells": boosted_trees, "knn-cells": knn_cells}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=["xenium", "merfish", "merfish-adjacent", "seqfish"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-cells", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS / "ceiling.md")
    args = parser.parse_args()
    rows = []
    for name in args.sets:
        for seed in args.seeds:
            parts = load(name, "same-tissue", seed)
            if parts is None:
                print(f"{name}: data not found, skipped", flush=True)
                break
            train, held = parts
            held = subsample(held, args.max_cells, seed)
            genes = train.var_names.intersection(held.var_names)
            x_train, x_query = dense_x(lognorm(train[:, genes])), dense_x(lognorm(held[:, genes]))
            xy_train, truth = (np.asarray(a.obsm["spatial"], float) for a in (train, held))
            for method, fit_predict in MODELS.items():
                t = time.perf_counter()
                xy = fit_predict(x_train, xy_train, x_query, seed)
                m = gx.metrics.evaluate_geometry(xy, truth)
                rows.append(
                    {"data": name, "seed": seed, "method": method, "training cells": train.n_obs,
                     "query cells": held.n_obs, "genes": len(genes), **{k: m[k] for k in METRICS},
                     "time (s)": time.perf_counter() - t}
                )  # fmt: skip
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = mean_sd_markdown(table, ["data", "method"], METRICS)
    write_results(
        args.out,
        "# How far a cell's expression places it: supervised models given the true positions "
        "(benchmarks/bench_ceiling.py, 2-core CPU machine)\n\n"
        "The same-tissue splits of `bench_peers.py`; the models learn from the single cells of the spot-making "
        "half (or section) *with their true positions*, which no mapping method gets. Stress-1: lower is better; "
        "the other metrics: higher is better.\n\n"
        + table.round(3).to_markdown(index=False)
        + f"\n\nMean ± SD over seeds {sorted(set(args.seeds))}:\n\n"
        + summary,
    )
    print(summary)


if __name__ == "__main__":
    main()
