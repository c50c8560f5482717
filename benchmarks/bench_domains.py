"""Spatial domains on DLPFC (3 Visium slides, manual layers) and osmFISH (anatomical regions), issue #8.

Run: ``.venv/bin/python benchmarks/bench_domains.py [--sets dlpfc osmfish] [--methods ...] [--seeds 0]``.
Writes ``benchmarks/results/domains.md`` (or ``--out``; ``results/domains_backbone.md`` is the run with
``--reps pca gearsx_backbone gearsx_backbone_smoothed``).

Representations, per data set:

* ``pca``: scanpy's Visium tutorial: log1p of the normalised expression, 2,000 highly variable genes
  (all genes for osmFISH's 33), 50 principal components (no scaling), per slide;
* ``gearsx``: ``obsm['X_gears']`` of :func:`gearsx.tl.fit_encoder` trained on all slides of the
  data set at once (log1p, 2,000 HVGs with the slide as batch, per-slide mean centring);
* ``gearsx_backbone``: ``obsm['X_gears_backbone']`` of the same encoder (its last hidden layer, 256-d,
  before the final projection; the default of :func:`gearsx.tl.cluster_domains`);
* ``pca_smoothed``, ``gearsx_smoothed``, ``gearsx_backbone_smoothed``: the same after :func:`gearsx.tl.spatial_smooth` (mean over
  each spot and its 6 nearest spots, the first ring of the Visium grid; 6 nearest cells on osmFISH).

Each method (``mclust``, ``scan``, ``leiden``, ``kmeans``; ``n_clusters`` = number of reference
labels; 20 PCs of the representation) runs per slide, with and without the spatial majority vote
(``refine=True``, 6 neighbours). Scores: ARI, NMI (unlabelled spots left out) and spatial coherence.
osmFISH cells in the region "Excluded" are removed first; coordinates are in pixels.
"""

import argparse
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from _common import DATA

import gearsx as gx
from gearsx.tl._clustering import spatial_majority_vote

warnings.filterwarnings("ignore")
OUT = Path(__file__).resolve().parent / "results" / "domains.md"
REPS = {
    "pca": "X_pca_bench",
    "pca_smoothed": "X_pca_bench_smoothed",
    "gearsx": "X_gears",
    "gearsx_smoothed": "X_gears_smoothed",
    "gearsx_backbone": "X_gears_backbone",
    "gearsx_backbone_smoothed": "X_gears_backbone_smoothed",
}


def load(name):
    """Slides as one AnnData with obs['slide'] and obs['truth'] (None when the data are missing)."""
    if name == "dlpfc":
        files = sorted((DATA / "dlpfc_visium_libd").glob("dlpfc_*.h5ad"))
        if not files:
            return None
        parts = []
        for f in files:
            a = ad.read_h5ad(f)
            a.obs["slide"] = f.stem.split("_")[1]
            a.obs["truth"] = a.obs["layer"].astype(str).replace("NA", np.nan)
            a.var_names = a.var["gene_symbol"].astype(str)
            a.var_names_make_unique()
            parts.append(a)
        a = ad.concat(parts, join="inner", uns_merge="unique")
        sc.pp.log1p(a)  # X is library-size normalised already
        return a
    if name == "osmfish":
        f = DATA / "osmfish_mouse_sscortex" / "osmfish_mouse_sscortex.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
        a = a[a.obs["Region"] != "Excluded"].copy()
        a = a[np.asarray(a.X.sum(1)).ravel() > 0].copy()
        a.obs["slide"] = "osmfish"
        a.obs["truth"] = a.obs["Region"].astype(str)
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        return a
    raise ValueError(name)


def pca_rep(a):
    a = a.copy()
    if a.n_vars > 2000:
        sc.pp.highly_variable_genes(a, n_top_genes=2000, subset=True)
    return sc.pp.pca(a.X, n_comps=min(50, a.n_vars - 1), random_state=0)


def gearsx_rep(a, seed):
    st = a.copy()
    multi = st.obs["slide"].nunique() > 1
    if st.n_vars > 2000:
        gx.pp.highly_variable_genes(st, batch_key="slide" if multi else None, n_top_genes=2000)
        st = st[:, st.var["highly_variable"].to_numpy()].copy()
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    gx.tl.fit_encoder(st, slide_key="slide", random_state=seed, progress=False)
    return {k: st.obsm[k] for k in ("X_gears", "X_gears_backbone")}


def write(rows, args):
    """Summarise ``rows`` into ``OUT`` (mean over slides and seeds; SD of the slide mean over seeds)."""
    df = pd.DataFrame(rows)
    keys = ["data", "rep", "method", "refine"]
    per_slide = df.pivot_table(index=keys, columns="slide", values="ari", aggfunc="mean")
    seed_sd = df.groupby([*keys, "seed"])["ari"].mean().groupby(keys).std().rename("ari_seed_sd")
    summary = (
        df.groupby(keys)
        .agg(ari=("ari", "mean"), ari_sd=("ari", "std"), nmi=("nmi", "mean"), coherence=("coherence", "mean"),
             time_s=("time_s", "mean"))
        .join(seed_sd)
        .join(per_slide)
        .reset_index()
    )  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        "# Spatial domains (benchmarks/bench_domains.py, 2-core CPU machine)\n\n"
        f"Seeds: {sorted(df['seed'].unique().tolist())}; `gx.tl.spatial_smooth` neighbours: {args.smooth}. "
        "ARI/NMI/coherence: mean over slides and seeds; `ari_sd`: SD over slides x seeds; `ari_seed_sd`: SD over "
        "seeds of the mean over slides; slide columns: ARI per slide (mean over seeds). time: clustering only, per "
        "slide (the encoder is trained once per data set and seed).\n\n"
        + summary.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )
    print(summary.to_string(), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=["dlpfc", "osmfish"])
    parser.add_argument("--methods", nargs="+", default=["mclust", "scan", "leiden", "kmeans"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--reps", nargs="+", default=list(REPS))
    parser.add_argument("--smooth", type=int, default=6, help="neighbours of gx.tl.spatial_smooth")
    parser.add_argument("--out", default=str(OUT), help="markdown table to write")
    args = parser.parse_args()
    gx.settings.progress_bar = False
    rows = []
    for name in args.sets:
        a = load(name)
        if a is None:
            print(f"{name}: data not found under {DATA}, skipped", flush=True)
            continue
        for seed in args.seeds:
            t = time.perf_counter()
            reps = gearsx_rep(a, seed)
            print(f"{name}: encoder {time.perf_counter() - t:.0f} s", flush=True)
            for slide in a.obs["slide"].unique():
                in_slide = (a.obs["slide"] == slide).to_numpy()
                s = a[in_slide].copy()
                s.obsm["X_pca_bench"] = pca_rep(s)
                for key, z in reps.items():
                    s.obsm[key] = z[in_slide]
                for key in ("X_pca_bench", *reps):
                    gx.tl.spatial_smooth(s, use_rep=key, n_neighbors=args.smooth)
                k = s.obs["truth"].nunique()
                for rep in args.reps:
                    key = REPS[rep]
                    for method in args.methods:
                        t = time.perf_counter()
                        gx.tl.cluster_domains(s, method=method, use_rep=key, n_clusters=k, random_state=seed)
                        dt = time.perf_counter() - t
                        raw = s.obs["gears_domain"].to_numpy()
                        # refine=True is a deterministic vote on these labels; apply it without re-clustering
                        refined = spatial_majority_vote(raw, s.obsm["spatial"], k=6)
                        for refine, labels in ((False, raw), (True, refined)):
                            m = gx.metrics.domain_scores(s.obs["truth"], labels, spatial=s.obsm["spatial"])
                            rows.append(
                                {"data": name, "slide": slide, "seed": seed, "rep": rep, "method": method,
                                 "refine": refine, "ari": m["ari"], "nmi": m["nmi"], "coherence": m["coherence"],
                                 "time_s": dt}
                            )  # fmt: skip
                            print(rows[-1], flush=True)
            write(rows, args)  # after every data set and seed, so a long run leaves its table behind


if __name__ == "__main__":
    main()
