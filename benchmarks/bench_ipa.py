"""Structure module (issue #9): ``GEARS(structure='ipa')`` vs the generator alone and with the refiner, and the oracle gap.

Run: ``.venv/bin/python benchmarks/bench_ipa.py [--epochs 8] [--seeds 0 1 2] [--sets simulator osmfish merfish]
[--structures generator refiner ipa]``. Writes ``benchmarks/results/ipa.md`` and its per-seed rows,
``ipa.csv``.

Same protocol and held-out minisets as ``bench_gears.py`` (encoder and models trained on spots of one
part of the tissue; minisets of held-out cells predicted from expression only). Each seed trains the
whole chain, the encoder and the adapter included, and every model trains for the same number of
steps. Each held-out miniset is scored (Spearman of distances, recall@15, ``L_geo`` against
``build_targets(kind='rw_stress')`` of the true positions, on unit-RMS coordinates) for

* the generator alone (``structure=None``, the default model),
* the generator + 4-step refinement (``structure='refiner'``; the default until 5 December 2026),
* the IPA model's inference path (candidate cosine-kNN graph + learned gate),
* the IPA model's oracle path (true spatial kNN edges, gate off): an upper bound that shows how
  much the inference graph costs.

Reported: mean ± std over seeds of the per-seed mean over minisets.
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import write_precise_rows, write_results
from bench_gears import cases, fit_embeddings, heldout_minisets, prepared

import gearsx as gx

warnings.filterwarnings("ignore")
OUT = Path(__file__).resolve().parent / "results" / "ipa.md"
#: The paths compared, by their name here: the value of ``GEARS(structure=)``.
STRUCTURES = {"generator": None, "refiner": "refiner", "ipa": "ipa"}


def unit(xy):
    xy = xy - xy.mean(0)
    return xy / np.sqrt((xy**2).sum(1).mean())


def score(pred, truth):
    t = gx.geometry.build_targets(truth, kind="rw_stress")
    lgeo = float(gx.module.geo_loss(torch.as_tensor(unit(pred), dtype=torch.float64), t))
    return {
        "spearman": gx.metrics.distance_correlation(pred, truth),
        "recall15": gx.metrics.knn_overlap(pred, truth, k=15),
        "L_geo": lgeo,
    }


def write(rows, args):
    """Aggregate the rows so far into ``results/ipa.md`` (rewritten after every data set)."""
    df = pd.DataFrame(rows)
    agg = df.groupby(["data", "path"], sort=False)[["spearman", "recall15", "L_geo", "train_s"]].agg(["mean", "std"])
    lines = ["| data | path | Spearman | recall@15 | L_geo | train (s) |", "|---|---|---|---|---|---|"]
    for (data, path), r in agg.iterrows():
        cells_ = [f"{r[(c, 'mean')]:.3f} ± {r[(c, 'std')]:.3f}" for c in ("spearman", "recall15", "L_geo")]
        lines.append(f"| {data} | {path} | " + " | ".join(cells_) + f" | {r[('train_s', 'mean')]:.0f} |")
    write_precise_rows(OUT, rows, ["data", "seed", "path", "spearman", "recall15", "L_geo", "train_s"])
    write_results(
        OUT,
        "# Structure module vs the generator, alone and with the refiner (benchmarks/bench_ipa.py, 2-core CPU machine)\n\n"
        f"Held-out spot-scale minisets ({args.n_sets} per data set), {args.epochs} epochs x 32 batches per model, "
        f"seeds {args.seeds} (each seed trains the encoder, the adapter and the models): mean ± std over seeds. "
        "L_geo: lower is better.\n\n" + "\n".join(lines) + "\n",
    )
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=["simulator", "osmfish", "merfish"])
    parser.add_argument("--n-sets", type=int, default=12)
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=list(STRUCTURES))
    args = parser.parse_args()
    gx.settings.progress_bar = False
    rows = []
    for name, st, cells, slide_key, gt_key in cases(args.sets):
        st, cells = prepared(st, cells, slide_key)
        xy = np.asarray(cells.obsm[gt_key], dtype=float)
        sets = heldout_minisets(st, cells, slide_key=slide_key, gt_key=gt_key, n_sets=args.n_sets)["spot-scale"]
        for seed in args.seeds:
            fit_embeddings(st, cells, slide_key, seed)  # the whole chain from the seed, encoder included
            for structure in args.structures:
                geo = gx.model.GEARS(st, slide_key=slide_key, structure=STRUCTURES[structure])
                t = time.perf_counter()
                geo.train(max_epochs=args.epochs, random_state=seed, progress=False)
                dt = time.perf_counter() - t
                label = {"generator": "generator (default)", "ipa": "ipa (inference)"}.get(structure, structure)
                preds = {label: geo.predict_geometry(cells, sets)}
                if structure == "ipa":
                    preds["ipa (oracle)"] = [
                        geo.get_attention(cells, s, recycle=-1, oracle_coords=xy[s])["coords"] for s in sets
                    ]
                for path, pred in preds.items():
                    m = pd.DataFrame([score(p, xy[s]) for p, s in zip(pred, sets, strict=True)]).mean()
                    rows.append({"data": name, "seed": seed, "path": path, **m.to_dict(), "train_s": dt})
                    print(rows[-1], flush=True)
        lines = write(rows, args)  # after every data set: a long run leaves a page behind
    if not rows:
        msg = f"None of the data sets {args.sets} was found (real data are read from ../shared/data)."
        raise SystemExit(msg)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
