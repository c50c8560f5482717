"""How long to train the geometry model: its validation figures against the placement of query cells.

Run: ``.venv/bin/python benchmarks/bench_training_length.py [--epochs 2 5 10 20] [--seeds 0 1 2]
[--sets simulator merfish xenium]`` (reads ../shared/data; skips missing sets). Writes
``benchmarks/results/training_length.md``.

``GEARS.train`` records ``val_spearman`` after each epoch: the Spearman correlation of predicted and
true distances within minisets of held-out spots (by default a 20% band at one end of each slide).
A user of scvi-tools would stop training where that figure peaks. This script asks whether it tells
how well the model will place query cells. Per data set and seed the encoder and adapter are trained
once; then a geometry model is trained for each number of epochs (the learning-rate schedule spans
the run, as in a user's call) and the query cells are reconstructed with the defaults.

* simulator: ``gx.datasets.simulate_tissue`` (three slides of spots; the cells are a section of the
  same tissue, so ``anchor='auto'`` anchors them).
* merfish, xenium: ``bench_peers.py``'s disjoint protocol (spots from one section or region, the cells
  from the adjacent section or another region, at most 5,000). ``anchor='auto'`` anchors these too (as
  on ``peers_disjoint.md``); the intrinsic layout is the geometry model's alone.

Reported per run: the validation Spearman after the first epoch, at its best epoch (and which) and
after the last; the query's intrinsic layout (``obsm['X_gears_intrinsic']`` when anchored, else the
layout) and the final layout, scored against the true positions (Spearman of distances, edge
ROC-AUC). The default ``max_epochs=None`` is 5 epochs of 32 batches.
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import mean_sd_markdown, write_results
from bench_peers import _embed, load, make_spots, subsample, train_gears

import gearsx as gx

warnings.filterwarnings("ignore")
OUT = Path(__file__).resolve().parent / "results" / "training_length.md"


def case(name: str, seed: int):
    """``(ST AnnData with embeddings, adapted cells, true positions)`` for one data set and seed, or None."""
    if name == "simulator":
        st, cells = gx.datasets.simulate_tissue(random_state=seed)
        st, cells = gx.pp.prepare(st, cells, slide_key="slide")
        gx.pp.mean_center_per_slide(st, slide_key="slide")
        gx.pp.mean_center_per_slide(cells, slide_key=None)
        encoder = gx.tl.fit_encoder(st, slide_key="slide", random_state=seed, progress=False)
        gx.tl.fit_adapter(cells, encoder, random_state=seed)
        return st, cells, np.asarray(cells.obsm["spatial_gt"], float)
    parts = load(name, "disjoint", seed)
    if parts is None:
        return None
    train, held = parts
    spots = make_spots(train)
    held = subsample(held, 5000, seed)
    truth = np.asarray(held.obsm["spatial"], float)
    query = held.copy()
    del query.obsm["spatial"]
    st, cells = _embed(spots, query, seed)
    return st, cells, truth


def scores(layout: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Spearman of pairwise distances and edge ROC-AUC of ``layout`` against ``truth``."""
    m = gx.metrics.evaluate_geometry(layout, truth)
    return float(m["spearman"]), float(m["edge_auc"])


def run(name: str, seed: int, epochs: list[int]) -> list[dict]:
    """One row per number of epochs: validation figures, and the query's placement."""
    parts = case(name, seed)
    if parts is None:
        print(f"{name}: data not found, skipped", flush=True)
        return []
    st, cells, truth = parts
    slide_key = "slide" if name == "simulator" else None
    rows = []
    for n_epochs in epochs:
        t = time.perf_counter()
        geo = train_gears(st, seed, slide_key=slide_key, max_epochs=n_epochs)
        seconds = time.perf_counter() - t
        val = geo.history_["val_spearman"].to_numpy()
        gx.tl.reconstruct(cells, geo, n_patch=min(384, cells.n_obs // 4), progress=False, random_state=seed)
        mode = cells.uns["gears"]["anchor"]["mode"]
        intrinsic = cells.obsm["X_gears_intrinsic" if mode == "reference" else "X_gears_spatial"]
        sp_i, auc_i = scores(intrinsic, truth)
        sp_f, auc_f = scores(cells.obsm["X_gears_spatial"], truth)
        rows.append(
            {
                "data": name, "seed": seed, "epochs": n_epochs, "mode": mode,
                "val first": float(val[0]), "val best": float(val.max()), "best epoch": int(val.argmax()) + 1,
                "val last": float(val[-1]),
                "intrinsic spearman": sp_i, "intrinsic edge_auc": auc_i,
                "final spearman": sp_f, "final edge_auc": auc_f, "train (s)": seconds,
            }
        )  # fmt: skip
        print(
            " | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()), flush=True
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=["simulator", "merfish", "xenium"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = [row for name in args.sets for seed in args.seeds for row in run(name, seed, args.epochs)]
    table = pd.DataFrame(rows)
    columns = [
        "val first", "val best", "best epoch", "val last",
        "intrinsic spearman", "intrinsic edge_auc", "final spearman", "final edge_auc", "train (s)",
    ]  # fmt: skip
    command = " ".join(
        ["benchmarks/bench_training_length.py", "--epochs", *map(str, args.epochs), "--seeds", *map(str, args.seeds)]
        + ["--sets", *args.sets]
    )
    text = (
        "# Training length of the geometry model: validation figures against query placement "
        "(benchmarks/bench_training_length.py, 2-core CPU machine)\n\n"
        f"Command: `{command}`. Validation: Spearman of distances within minisets of the held-out spots "
        "(`history_['val_spearman']`). Query: the cells' intrinsic layout and the final one (anchored where "
        "`mode` is `reference`), Spearman of distances and edge ROC-AUC against the true positions.\n\n"
        + table.round(3).to_markdown(index=False)
        + f"\n\nMean ± SD over seeds {args.seeds}:\n\n"
        + mean_sd_markdown(table, ["data", "epochs"], columns)
        + "\n"
    )
    write_results(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
