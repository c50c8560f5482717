"""Spatial domains on DLPFC (3 Visium slides, manual layers) and osmFISH (anatomical regions), with GraphST.

Run: ``.venv/bin/python benchmarks/bench_domains.py [--sets dlpfc osmfish] [--reps ...] [--seeds 0 1 2]``.
Writes ``benchmarks/results/domains.md`` (or ``--out``) and the per-run rows next to it (``.csv``). GraphST needs the ``bench`` dependency group.

Representations, each clustered by ``gx.tl.cluster_domains(method='mclust')`` (the Python mclust EEE,
``n_clusters`` = number of reference labels) with and without ``refine=True`` (6 neighbours):

* ``pca``: non-spatial baseline: 3,000 highly variable genes (scanpy ``'seurat'`` flavour) of the
  log-normalised expression, 20 principal components, per slide;
* ``gearsx_domain``: :func:`gearsx.tl.domain_embedding` (the default representation of
  ``cluster_domains``) on the same genes, per slide;
* ``gearsx_domain_joint``: the same, trained on all slides of the data set at once (``slide_key``),
  clustered once over all spots; ARI is then computed per slide;
* ``gearsx_backbone``: the geometry encoder's backbone (:func:`gearsx.tl.fit_encoder`, all slides),
  the default before the domain embedding existed;
* ``graphst``: GraphST 1.1.1 (Long et al. 2023) with its defaults (its own preprocessing of the
  library-size-normalised counts, 600 epochs, CPU), its ``obsm['emb']`` clustered by the same mclust
  after a 20-component PCA (GraphST's own recipe), per slide. Not run on osmFISH: its preprocessing
  selects 3,000 highly variable genes and osmFISH has 33.

``time_s`` is end to end per slide (gene selection, representation, clustering); for the joint rows
it is the joint run divided by the number of slides. Scores: ARI and NMI against the manual labels
(unlabelled spots left out) and spatial coherence.
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
ALL_REPS = ("pca", "gearsx_domain", "gearsx_domain_joint", "gearsx_backbone", "graphst")


def load(name):
    """Slides as one AnnData with obs['slide'], obs['truth'] and library-size-normalised counts in
    ``layers['norm']``, log1p in ``X`` (None when the data are missing)."""
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
        a = ad.concat(parts, join="inner", uns_merge="unique")  # X is library-size normalised already
    elif name == "osmfish":
        f = DATA / "osmfish_mouse_sscortex" / "osmfish_mouse_sscortex.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
        a = a[a.obs["Region"] != "Excluded"].copy()
        a = a[np.asarray(a.X.sum(1)).ravel() > 0].copy()
        a.obs["slide"] = "osmfish"
        a.obs["truth"] = a.obs["Region"].astype(str)
        sc.pp.normalize_total(a)
    else:
        raise ValueError(name)
    a.layers["norm"] = a.X.copy()
    sc.pp.log1p(a)
    return a


def select_genes(s):
    """Mark 3,000 highly variable genes (all genes when there are fewer)."""
    if s.n_vars > 3000:
        sc.pp.highly_variable_genes(s, n_top_genes=3000, flavor="seurat")
    else:
        s.var["highly_variable"] = True


def graphst_embedding(s, seed):
    import torch
    from GraphST import GraphST

    raw = ad.AnnData(s.layers["norm"].copy(), obs=s.obs[[]].copy(), var=s.var[[]].copy())
    raw.obsm["spatial"] = np.asarray(s.obsm["spatial"], dtype=np.float64)
    out = GraphST.GraphST(raw, device=torch.device("cpu"), random_seed=seed).train()
    return np.asarray(out.obsm["emb"], dtype=np.float64)


def score(rows, base, truth, labels, coords):
    for refine, lab in ((False, labels), (True, spatial_majority_vote(labels, coords, k=6))):
        m = gx.metrics.domain_scores(truth, lab, spatial=coords)
        rows.append({**base, "refine": refine, "ari": m["ari"], "nmi": m["nmi"], "coherence": m["coherence"]})
        print(rows[-1], flush=True)


def per_slide(a, name, seed, reps, rows, backbone):
    for slide in a.obs["slide"].unique():
        s = a[(a.obs["slide"] == slide).to_numpy()].copy()
        k = s.obs["truth"].nunique()
        for rep in reps:
            t = time.perf_counter()
            kw = {"n_pcs": 20}
            if rep == "pca":
                select_genes(s)
                s.obsm["X_pca_bench"] = sc.pp.pca(s[:, s.var["highly_variable"]].X.toarray(), n_comps=20,
                                                  random_state=seed)  # fmt: skip
                key = "X_pca_bench"
            elif rep == "gearsx_domain":
                select_genes(s)
                gx.tl.domain_embedding(s, random_state=seed, progress=False)
                key, kw = "X_gears_domain", {}
            elif rep == "gearsx_backbone":
                s.obsm["X_gears_backbone"] = backbone[(a.obs["slide"] == slide).to_numpy()]
                key = "X_gears_backbone"
            elif rep == "graphst":
                if s.n_vars < 3000:
                    print(f"{name}: GraphST skipped (its preprocessing needs >= 3,000 genes)", flush=True)
                    continue
                s.obsm["X_graphst"] = graphst_embedding(s, seed)
                key = "X_graphst"
            else:
                continue
            gx.tl.cluster_domains(s, method="mclust", use_rep=key, n_clusters=k, random_state=seed, **kw)
            dt = time.perf_counter() - t
            base = {"data": name, "slide": slide, "seed": seed, "rep": rep, "time_s": dt}
            score(rows, base, s.obs["truth"], s.obs["gears_domain"].to_numpy(), s.obsm["spatial"])


def joint(a, name, seed, rows):
    s = a.copy()
    t = time.perf_counter()
    select_genes(s)
    gx.tl.domain_embedding(s, slide_key="slide", random_state=seed, progress=False)
    k = s.obs["truth"].nunique()
    gx.tl.cluster_domains(s, method="mclust", n_clusters=k, random_state=seed)
    dt = (time.perf_counter() - t) / s.obs["slide"].nunique()
    for slide in s.obs["slide"].unique():
        sel = (s.obs["slide"] == slide).to_numpy()
        base = {"data": name, "slide": slide, "seed": seed, "rep": "gearsx_domain_joint", "time_s": dt}
        score(rows, base, s.obs["truth"][sel], s.obs["gears_domain"].to_numpy()[sel], s.obsm["spatial"][sel])


def encoder_backbone(a, seed):
    st = a.copy()
    multi = st.obs["slide"].nunique() > 1
    if st.n_vars > 2000:
        gx.pp.highly_variable_genes(st, batch_key="slide" if multi else None, n_top_genes=2000)
        st = st[:, st.var["highly_variable"].to_numpy()].copy()
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    gx.tl.fit_encoder(st, slide_key="slide", random_state=seed, progress=False)
    return st.obsm["X_gears_backbone"]


def write(rows, args):
    """Summarise ``rows`` into ``args.out``: one row per data set, representation and refinement."""
    df = pd.DataFrame(rows)
    keys = ["data", "rep", "refine"]
    per = df.pivot_table(index=keys, columns="slide", values="ari", aggfunc="mean")
    seed_sd = df.groupby([*keys, "seed"])["ari"].mean().groupby(keys).std().rename("ari_seed_sd")
    summary = (
        df.groupby(keys)
        .agg(ari=("ari", "mean"), nmi=("nmi", "mean"), coherence=("coherence", "mean"), time_s=("time_s", "mean"))
        .join(seed_sd)
        .join(per)
        .reset_index()
    )
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        "# Spatial domains (benchmarks/bench_domains.py, 2-core CPU machine)\n\n"
        f"Seeds: {sorted(df['seed'].unique().tolist())}. Clustering: `gx.tl.cluster_domains(method='mclust')`, "
        "`n_clusters` = number of reference labels. ARI/NMI/coherence: mean over slides and seeds; `ari_seed_sd`: "
        "SD over seeds of the mean over slides; slide columns: ARI per slide (mean over seeds); `time_s`: end to "
        "end per slide. Representations: see the module docstring of `benchmarks/bench_domains.py`.\n\n"
        + summary.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )
    df.to_csv(out.with_suffix(".csv"), index=False)  # one row per slide, seed, representation (tutorial 03 plots it)
    print(summary.to_string(), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=["dlpfc", "osmfish"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--reps", nargs="+", default=list(ALL_REPS), choices=ALL_REPS)
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
            backbone = encoder_backbone(a, seed) if "gearsx_backbone" in args.reps else None
            per_slide(a, name, seed, args.reps, rows, backbone)
            if "gearsx_domain_joint" in args.reps and a.obs["slide"].nunique() > 1:
                joint(a, name, seed, rows)
            write(rows, args)  # after every data set and seed, so a long run leaves its table behind


if __name__ == "__main__":
    main()
