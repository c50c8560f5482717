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
from pathlib import Path

import scanpy as sc
from _common import PeakRSS

import gearsx as gx

warnings.filterwarnings("ignore")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", default=None, help="folder to save trained models to, or load them from")
    args = parser.parse_args()
    gx.settings.progress_bar = False
    st, some_cells = gx.datasets.simulate_tissue(n_sc_cells=10, random_state=0)
    st, _ = gx.pp.prepare(st, some_cells, slide_key="slide", n_top_genes=2000)
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    saved = args.models is not None and (Path(args.models) / "geo" / "meta.json").exists()
    if saved:
        enc = gx.model.SharedEncoder.load(Path(args.models) / "enc", adata=st)
        st.obsm["X_gears"] = enc.get_latent_representation(st)
        geo = gx.model.GEARS.load(Path(args.models) / "geo", adata=st)
        print(f"loaded the encoder and GEARS from {args.models}", flush=True)
    else:
        enc = gx.tl.fit_encoder(st, slide_key="slide", progress=False)
        geo = gx.model.GEARS(st, slide_key="slide")
        t = time.perf_counter()
        geo.train(max_epochs=args.epochs, progress=False)
        print(f"GEARS training: {time.perf_counter() - t:.0f} s ({args.epochs} epochs x 32 batches)", flush=True)
        if args.models is not None:
            enc.save(Path(args.models) / "enc", overwrite=True)
            geo.save(Path(args.models) / "geo", overwrite=True)
    for n in args.cells:
        _, cells = gx.datasets.simulate_tissue(n_sc_cells=n, random_state=0)
        cells = cells[:, st.var_names].copy()
        sc.pp.normalize_total(cells)
        sc.pp.log1p(cells)
        gx.pp.mean_center_per_slide(cells, slide_key=None)
        gx.tl.fit_adapter(cells, enc)
        t = time.perf_counter()
        with PeakRSS() as mem:
            gx.tl.reconstruct(cells, geo, progress=False)
        dt = time.perf_counter() - t
        m = gx.metrics.evaluate_adata(cells, "X_gears_spatial", "spatial_gt").iloc[0]
        rec = cells.uns["gears"]["reconstruct"]
        print(
            f"{n:>7} cells: reconstruct {dt:6.1f} s, {rec['n_patches']} patches, peak memory above the start {mem.gb:.2f} GB | "
            f"Spearman {m['spearman']:.3f} Stress-1 {m['stress1']:.3f} edge AUC {m['edge_auc']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
