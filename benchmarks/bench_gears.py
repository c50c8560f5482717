"""Geometry-model ablation (issue #6): generator only vs generator + refiner vs ``targets='rw_stress'``.

The models are built with ``structure='refiner'`` (opt-in; the default model is the generator alone), and
both rows of each come from the same trained model: its generator's proposal, and that proposal refined.

Run: ``.venv/bin/python benchmarks/bench_gears.py [--epochs 8]`` (reads ../shared/data; skips missing sets).

Protocol, per data set: train the encoder and GEARS on *spots* of one part of the tissue,
then predict the geometry of minisets (128-384 cells, locality-weighted) of *held-out
cells* from their expression only (encoder + SC adapter), and score each miniset against
the true cell positions with recall@15 (neighbourhood) and the Spearman correlation of
pairwise distances. Baseline: the first two principal components of the cells'
embeddings. Printed as a markdown table (mean over 24 minisets) with training times.

Two kinds of held-out minisets: *spot-scale* (cells thinned to one per spot-pitch grid
square first, so a miniset spans a region like the training spot minisets) and
*cell-scale* (all cells, so a 128-384-cell miniset covers a region a few spots wide,
where expression varies mostly by cell type, not by position).

* simulator: ST spots of three sections (one held out for validation); the SC cells
  are a fourth section.
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

import anndata as ad
import numpy as np
from _common import DATA, band_split, lognorm
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA

import gearsx as gx

warnings.filterwarnings("ignore")


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


def run(name, st, cells, *, slide_key, gt_key, epochs, rows):
    """``st``: spots (log-normalised), ``cells``: held-out cells (log-normalised) with true positions in ``gt_key``."""
    st, cells = gx.pp.prepare(st, cells, slide_key=slide_key, n_top_genes=2000)
    gx.pp.mean_center_per_slide(st, slide_key=slide_key)
    gx.pp.mean_center_per_slide(cells, slide_key=None)
    t = time.perf_counter()
    enc = gx.tl.fit_encoder(st, slide_key=slide_key, progress=False)
    gx.tl.fit_adapter(cells, enc)
    t_enc = time.perf_counter() - t
    xy = np.asarray(cells.obsm[gt_key], dtype=float)
    scales = heldout_minisets(st, cells, slide_key=slide_key, gt_key=gt_key)
    emb = cells.obsm["X_gears"]
    for scale, sets in scales.items():
        pca = [PCA(2, random_state=0).fit_transform(emb[s]) for s in sets]
        rows.append((name, scale, "PCA of embeddings", *score_sets(pca, xy, sets), float("nan")))
        print(rows[-1], flush=True)
    for targets in ("gram", "rw_stress"):
        # the refiner is opt-in since the default became the generator alone: built here, so that both rows
        # of the ablation (the generator's proposal and its refinement) come from one trained model
        geo = gx.model.GEARS(st, slide_key=slide_key, targets=targets, structure="refiner")
        t = time.perf_counter()
        geo.train(max_epochs=epochs, random_state=0, progress=False)
        dt = time.perf_counter() - t
        label = "Gram targets" if targets == "gram" else "rw_stress targets"
        for scale, sets in scales.items():
            refined, base = geo.predict_geometry(cells, indices=sets, return_base=True)
            rows.append((name, scale, f"{label}: generator only", *score_sets(base, xy, sets), dt))
            rows.append((name, scale, f"{label}: generator + refiner", *score_sets(refined, xy, sets), dt))
            print(rows[-2], rows[-1], sep="\n", flush=True)
    print(f"{name}: {st.n_obs} spots, {cells.n_obs} held-out cells, encoder+adapter {t_enc:.0f}s", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--sets", nargs="+", default=["simulator", "osmfish", "merfish"])
    args = parser.parse_args()
    rows = []
    for name, spots, held, slide_key, gt_key in cases(args.sets):
        run(name, spots, held, slide_key=slide_key, gt_key=gt_key, epochs=args.epochs, rows=rows)

    print(f"\n| data | minisets | method | recall@15 | Spearman | GEARS train (s, {args.epochs} epochs x 32 batches) |")
    print("|---|---|---|---|---|---|")
    for name, scale, method, rec, rho, dt in sorted(rows, key=lambda r: (r[0], r[1])):
        print(f"| {name} | {scale} | {method} | {rec:.3f} | {rho:.3f} | {'' if np.isnan(dt) else f'{dt:.0f}'} |")


if __name__ == "__main__":
    main()
