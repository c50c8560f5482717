"""Geometry-model ablation: the geometry model's training targets, Gram (default) vs ``targets='rw_stress'``.

Run: ``.venv/bin/python benchmarks/bench_gears.py [--epochs 8] [--seeds 0 1 2] [--sets simulator osmfish
merfish]`` (reads ../shared/data; skips missing sets). Writes ``benchmarks/results/gears_ablation.md``
and its per-seed rows, ``gears_ablation.csv``.

Protocol, per data set: train the encoder and the geometry model (the default generator alone) on
*spots* of one part of the tissue, then predict the geometry of minisets (128-384 cells,
locality-weighted) of *held-out cells* from their expression only (encoder + SC adapter), and
score each miniset against the true cell positions with recall@15 (neighbourhood) and the
Spearman correlation of pairwise distances. Baseline: the first two principal components of the
cells' embeddings. Each seed trains the whole chain (encoder, adapter, geometry models); the
minisets are the same for every seed. Reported: mean ± SD over seeds of the per-seed mean over
minisets. The refiner and the structure module are compared in ``bench_ipa.py``.

Two kinds of held-out minisets: *spot-scale* (cells thinned to one per spot-pitch grid
square first, so a miniset spans a region like the training spot minisets) and
*cell-scale* (all cells, so a 128-384-cell miniset covers a region a few spots wide,
where expression varies mostly by cell type, not by position).

* simulator: ST spots of three sections (the default validation holds out a band of each);
  the SC cells are a fourth section.
* osmFISH (one section): pseudo-spots of the left 60% of the tissue (along its long
  axis); held-out cells are the right 40%.
* MERFISH (two adjacent slices): pseudo-spots of slice bregma 0.26; held-out cells are
  slice bregma 0.21.

Pseudo-spots are denser than Visium (diameter 30 µm, centre-to-centre 40 µm) because
the sections are small: with Visium's 100 µm pitch a section has ~300 spots, too few
for 128-384-spot minisets.
"""

import argparse
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _common import DATA, band_split, lognorm, mean_sd_markdown, write_precise_rows, write_results
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA

import gearsx as gx

warnings.filterwarnings("ignore")
OUT = Path(__file__).resolve().parent / "results" / "gears_ablation.md"
#: The geometry models compared, by their label here: the value of ``GEARS(targets=)``.
TARGETS = {"Gram targets (default)": "gram", "rw_stress targets": "rw_stress"}


def score_sets(pred_sets, coords, sets):
    rec = [gx.metrics.knn_overlap(p, coords[s], k=15) for p, s in zip(pred_sets, sets, strict=True)]
    rho = [gx.metrics.distance_correlation(p, coords[s]) for p, s in zip(pred_sets, sets, strict=True)]
    return float(np.mean(rec)), float(np.mean(rho))


def heldout_minisets(st, cells, *, slide_key, gt_key, n_sets=24, seed=0):
    """Spot-scale and cell-scale minisets of the held-out cells: ``{'spot-scale': [idx, ...], 'cell-scale': [...]}``."""
    xy = np.asarray(cells.obsm[gt_key], dtype=float)
    rng = np.random.default_rng(seed)
    # spot scale: one cell per spot-pitch grid square, so a miniset spans a region like the training minisets
    spot_xy = st.obsm["spatial"][st.obs[slide_key] == st.obs[slide_key].iloc[0]] if slide_key else st.obsm["spatial"]
    pitch = float(np.median(cKDTree(spot_xy).query(spot_xy, k=2)[0][:, 1]))
    perm = rng.permutation(len(xy))
    _, first = np.unique(np.floor(xy[perm] / pitch).astype(np.int64), axis=0, return_index=True)
    thin = np.sort(perm[first])
    scales = {}
    for scale, pool in (("spot-scale", thin), ("cell-scale", np.arange(len(xy)))):
        n_max = min(384, len(pool))
        sampler = gx.geometry.MinisetSampler(xy[pool], n_min=min(128, n_max), n_max=n_max)
        scales[scale] = [pool[sampler.sample(rng)] for _ in range(n_sets)]
    return scales


def cases(names):
    """Yield ``(name, spots, held-out cells, slide_key, gt_key)`` (log-normalised) for the requested data sets."""
    if "simulator" in names:
        st, cells = gx.datasets.simulate_tissue(random_state=0)
        yield "simulator", st, cells, "slide", "spatial_gt"
    f = DATA / "osmfish_mouse_sscortex" / "osmfish_mouse_sscortex.h5ad"
    if "osmfish" in names and f.exists():
        a = ad.read_h5ad(f)
        um_per_px = float(np.sqrt(np.median(a.obs["size_um2"] / a.obs["size_pix"])))
        a.obsm["spatial"] = np.asarray(a.obsm["spatial"], dtype=float) * um_per_px
        a = a[np.asarray(a.X.sum(1)).ravel() > 0].copy()
        train = band_split(a.obsm["spatial"])
        spots = gx.datasets.pseudo_spots(a[train].copy(), spot_diameter=30, center_to_center=40, min_cells=1)
        yield "osmFISH", lognorm(spots), lognorm(a[~train].copy()), None, "spatial"
    f = DATA / "merfish_mouse_hypothalamus" / "merfish_mouse_hypothalamus.h5ad"
    if "merfish" in names and f.exists():
        a = ad.read_h5ad(f)
        spots = gx.datasets.pseudo_spots(
            a[a.obs["slice"] == "bregma_0.26"].copy(), spot_diameter=30, center_to_center=40, min_cells=1
        )
        yield "MERFISH", lognorm(spots), lognorm(a[a.obs["slice"] == "bregma_0.21"].copy()), None, "spatial"


def prepared(st, cells, slide_key):
    """``st`` and ``cells`` on their shared genes, log-normalised and centred (ST per slide), as both ablations use them."""
    st, cells = gx.pp.prepare(st, cells, slide_key=slide_key, n_top_genes=2000)
    gx.pp.mean_center_per_slide(st, slide_key=slide_key)
    gx.pp.mean_center_per_slide(cells, slide_key=None)
    return st, cells


def fit_embeddings(st, cells, slide_key, seed):
    """Train the encoder on ``st`` and adapt ``cells`` to it, both from ``seed``.

    The seed covers the whole chain: with the encoder fixed, the spread over seeds is understated (``ipa.md``).
    """
    enc = gx.tl.fit_encoder(st, slide_key=slide_key, progress=False, random_state=seed)
    gx.tl.fit_adapter(cells, enc, random_state=seed, progress=False)


def run(name, st, cells, *, slide_key, gt_key, epochs, seeds, n_sets, rows):
    """``st``: spots (log-normalised), ``cells``: held-out cells (log-normalised) with true positions in ``gt_key``."""
    st, cells = prepared(st, cells, slide_key)
    xy = np.asarray(cells.obsm[gt_key], dtype=float)
    scales = heldout_minisets(st, cells, slide_key=slide_key, gt_key=gt_key, n_sets=n_sets)
    for seed in seeds:
        fit_embeddings(st, cells, slide_key, seed)
        emb = cells.obsm["X_gears"]
        preds = {
            "PCA of embeddings": (
                {k: [PCA(2, random_state=0).fit_transform(emb[s]) for s in v] for k, v in scales.items()},
                np.nan,
            )
        }
        for label, targets in TARGETS.items():
            geo = gx.model.GEARS(st, slide_key=slide_key, targets=targets)
            t = time.perf_counter()
            geo.train(max_epochs=epochs, random_state=seed, progress=False)
            dt = time.perf_counter() - t
            preds[label] = ({k: geo.predict_geometry(cells, v) for k, v in scales.items()}, dt)
        for method, (by_scale, dt) in preds.items():
            for scale, pred in by_scale.items():
                rec, rho = score_sets(pred, xy, scales[scale])
                rows.append(
                    {
                        "data": name,
                        "minisets": scale,
                        "method": method,
                        "seed": seed,
                        "recall15": rec,
                        "spearman": rho,
                        "train_s": dt,
                    }
                )
                print(rows[-1], flush=True)


def write(rows, args):
    """Aggregate the rows so far into ``results/gears_ablation.md`` (rewritten after every data set)."""
    df = pd.DataFrame(rows).sort_values(  # data, minisets, method and seed in the order they first came
        ["data", "minisets", "method", "seed"], key=lambda c: c.map({v: i for i, v in enumerate(c.unique())})
    )
    columns = ["data", "minisets", "method", "seed", "recall15", "spearman", "train_s"]
    write_precise_rows(OUT, rows, columns)
    shown = df[columns].round(3)
    shown["train_s"] = [f"{t:.0f}" if np.isfinite(t) else "" for t in df["train_s"]]  # PCA: nothing trained
    per_seed = shown.to_markdown(index=False)
    table = mean_sd_markdown(df, ["data", "minisets", "method"], ["spearman", "recall15"])
    trained = df.dropna(subset=["train_s"]).groupby(["data", "method"], sort=False)["train_s"].mean()
    times = "; ".join(f"{data} {method}: {t:.0f} s" for (data, method), t in trained.items())
    write_results(
        OUT,
        "# Geometry model: Gram vs rw_stress targets (benchmarks/bench_gears.py, 2-core CPU machine)\n\n"
        f"Held-out minisets of cells ({args.n_sets} per scale and data set), placed from expression only; "
        f"{args.epochs} epochs x 32 batches per model (the default generator alone); seeds {args.seeds} (each "
        "seed trains the encoder, the adapter and the models). Spearman: of the miniset's pairwise distances; "
        "recall@15: overlap of the 15 nearest neighbours; train: the geometry model's training time (s).\n\n"
        f"Mean ± SD over seeds:\n\n{table}\n\nThe geometry model's training time (mean over seeds): {times}.\n\n"
        f"Per seed (mean over minisets):\n\n{per_seed}\n",
    )
    return table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=["simulator", "osmfish", "merfish"])
    parser.add_argument("--n-sets", type=int, default=24)
    args = parser.parse_args()
    gx.settings.progress_bar = False
    rows = []
    for name, spots, held, slide_key, gt_key in cases(args.sets):
        run(
            name,
            spots,
            held,
            slide_key=slide_key,
            gt_key=gt_key,
            epochs=args.epochs,
            seeds=args.seeds,
            n_sets=args.n_sets,
            rows=rows,
        )
        table = write(rows, args)  # after every data set: a long run leaves a page behind
    if not rows:
        msg = f"None of the data sets {args.sets} was found (real data are read from ../shared/data)."
        raise SystemExit(msg)
    print(table)


if __name__ == "__main__":
    main()
