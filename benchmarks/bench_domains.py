"""Spatial domains on DLPFC (3 Visium slides, manual layers) and osmFISH (anatomical regions), with GraphST; seqFISH cortex as a check.

Run: ``.venv/bin/python benchmarks/bench_domains.py [--sets dlpfc osmfish] [--reps ...] [--seeds 0 1 2]``.
Writes ``benchmarks/results/domains.md`` (or ``--out``) and the per-run rows next to it (``.csv``). GraphST needs the ``bench`` dependency group.

Preprocessing (scanpy's standard recipe, the one STAGATE and GraphST use): UMI counts (the DLPFC files
hold library-size-normalised counts; the counts are recovered exactly, see
:func:`counts_from_library_normalised`), 3,000 highly variable genes by scanpy's ``'seurat_v3'``
flavour on the counts, ``normalize_total(target_sum=1e4)`` and ``log1p``. osmFISH (33 genes, all kept) is
normalised to its median library size instead, scanpy's default for such a small targeted panel.

``seqfish`` (``--sets seqfish``, not in the default sets): the seqFISH visual cortex section (1,597
cells, 113 genes), scored against the 9 HMRF spatial domains its authors published (Zhu et al. 2018).
Those are a spatial model's output, not a manual annotation, so agreement with them is a second
single-cell check of which representation suits single-cell data, not a ground truth. Its values are
already normalised across cells (see its PROVENANCE.md), so it gets ``log1p`` only.

Representations, each clustered by ``gx.tl.cluster_domains(method='mclust')`` (the Python mclust EEE,
``n_clusters`` = number of reference labels, default ``n_pcs='auto'``) with and without
``refine=True`` (a vote over 6 neighbours, or ``--vote-k``, column ``vote_k``):

* ``pca``: non-spatial baseline: 20 principal components of the log-normalised expression of the
  highly variable genes, per slide;
* ``gearsx_domain``: :func:`gearsx.tl.domain_embedding` (the default representation of
  ``cluster_domains``) on the same genes, per slide;
* ``gearsx_domain_hops1`` (``2``, ``3``): the same with ``n_hops=1`` (2, 3): each code followed by its
  neighbourhood's mean, that mean's mean, and so on (CellCharter's examples aggregate 3 hops, as
  rings of neighbours at each graph distance rather than repeated means);
* ``gearsx_domain_pc20``: the same embedding clustered after a 20-component PCA (the default
  ``n_pcs`` before ``'auto'``), to show how much the clustering step moves the score;
* ``gearsx_domain_image``: the same with the optional image view (``image_key``, default
  ``image_weight``): the colour layout of the low-resolution H&E around each spot (see
  :func:`image_features`), per slide;
* ``gearsx_domain_joint``: the same, trained on all slides of the data set at once (``slide_key``),
  clustered once over all spots; ARI is then computed per slide (``gearsx_domain_joint_hops1``: with
  ``n_hops=1``);
* ``gearsx_backbone``: the geometry encoder's backbone (:func:`gearsx.tl.fit_encoder`, all slides),
  the default before the domain embedding existed;
* ``gearsx_encoder`` (``_smoothed``): the same encoder's embedding ``obsm['X_gears']`` (then its mean
  over each spot and its 6 nearest neighbours, :func:`gearsx.tl.spatial_smooth`), the representation
  of the best osmFISH figure before the domain embedding (0.733, one seed);
* ``graphst``: GraphST 1.1.1 (Long et al. 2023) with its defaults (its own preprocessing of the
  counts, 600 epochs, CPU), its ``obsm['emb']`` clustered by the same mclust
  after a 20-component PCA (GraphST's own recipe), per slide. Not run on osmFISH: its preprocessing
  selects 3,000 highly variable genes and osmFISH has 33.

``time_s`` is end to end per slide (gene selection, representation, clustering); for the joint rows
it is the joint run divided by the number of slides, and the encoder rows carry their share of the
encoder's fit on all slides. Scores: ARI and NMI against the manual labels
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
import scipy.sparse as sp
from _common import DATA, write_results

import gearsx as gx
from gearsx.tl._clustering import spatial_majority_vote

warnings.filterwarnings("ignore")
OUT = Path(__file__).resolve().parent / "results" / "domains.md"
ALL_REPS = (
    "pca",
    "gearsx_domain",
    "gearsx_domain_hops1",
    "gearsx_domain_hops2",
    "gearsx_domain_hops3",
    "gearsx_domain_image",
    "gearsx_domain_joint",
    "gearsx_domain_joint_hops1",
    "gearsx_backbone",
    "gearsx_encoder",
    "gearsx_encoder_smoothed",
    "graphst",
)

#: Representations read from the geometry encoder (:func:`encoder_embeddings`, fitted once per data set and seed).
ENCODER_REPS = ("gearsx_backbone", "gearsx_encoder", "gearsx_encoder_smoothed")


def counts_from_library_normalised(x: sp.csr_matrix) -> sp.csr_matrix:
    """UMI counts of a library-size-normalised count matrix: each spot's smallest non-zero value is one count.

    The DLPFC files hold Banksy's "count normalized" values (counts times one factor per spot, see
    their PROVENANCE.md). Dividing each row by its smallest non-zero entry recovers integer counts
    (checked: the largest deviation from an integer is below 1e-5), assuming every spot has a gene
    seen once, which holds for all spots of these slides (68% of non-zero counts are 1).
    """
    x = sp.csr_matrix(x, dtype=np.float64)
    mins = np.ones(x.shape[0])
    filled = np.diff(x.indptr) > 0
    mins[filled] = np.minimum.reduceat(x.data, x.indptr[:-1][filled])
    counts = sp.diags(1.0 / mins) @ x
    dev = np.abs(counts.data - np.round(counts.data)).max() if counts.nnz else 0.0
    if dev > 1e-3:
        msg = f"the matrix is not a per-spot multiple of integer counts (deviation {dev:.3g})"
        raise ValueError(msg)
    counts.data = np.round(counts.data)
    return counts.astype(np.float32).tocsr()


def load(name):
    """Slides as one AnnData with obs['slide'], obs['truth'], UMI counts in ``layers['counts']`` and
    ``normalize_total`` (1e4 for Visium, the median for osmFISH) + ``log1p`` in ``X`` (None when the data are missing)."""
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
            a.X = counts_from_library_normalised(a.X)  # the files hold library-size-normalised counts
            parts.append(a)
        a = ad.concat(parts, join="inner", uns_merge="unique")
    elif name == "osmfish":
        f = DATA / "osmfish_mouse_sscortex" / "osmfish_mouse_sscortex.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
        a = a[a.obs["Region"] != "Excluded"].copy()
        a = a[np.asarray(a.X.sum(1)).ravel() > 0].copy()
        a.obs["slide"] = "osmfish"
        a.obs["truth"] = a.obs["Region"].astype(str)
    elif name == "seqfish":
        f = DATA / "seqfish_mouse_visualcortex" / "seqfish_visualcortex_zhu2018.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
        a.obs["slide"] = "seqfish"
        a.obs["truth"] = a.obs["spatial_cluster"].astype(str)
        a.X = sp.csr_matrix(a.X)
        a.layers["counts"] = a.X.copy()  # already normalised across cells (see PROVENANCE.md): log1p only
        sc.pp.log1p(a)
        return a
    else:
        raise ValueError(name)
    a.layers["counts"] = a.X.copy()
    # Visium: scanpy's standard 1e4 counts per spot; the 33-gene osmFISH panel (a few hundred counts per
    # cell): the median library size, scanpy's default, as in every earlier osmFISH run here.
    sc.pp.normalize_total(a, target_sum=1e4 if name == "dlpfc" else None)
    sc.pp.log1p(a)
    return a


def select_genes(s, batch_key=None):
    """Mark 3,000 highly variable genes (scanpy's ``'seurat_v3'`` flavour on the counts; all genes when there are fewer)."""
    if s.n_vars > 3000:
        sc.pp.highly_variable_genes(s, n_top_genes=3000, flavor="seurat_v3", layer="counts", batch_key=batch_key)
    else:
        s.var["highly_variable"] = True


def graphst_embedding(s, seed):
    import torch
    from GraphST import GraphST

    raw = ad.AnnData(s.layers["counts"].copy(), obs=s.obs[[]].copy(), var=s.var[[]].copy())
    raw.obsm["spatial"] = np.asarray(s.obsm["spatial"], dtype=np.float64)
    out = GraphST.GraphST(raw, device=torch.device("cpu"), random_seed=seed).train()
    return np.asarray(out.obsm["emb"], dtype=np.float64)


def image_features(s, slide):
    """Colour layout of the low-resolution H&E around each spot: mean RGB of the 2 x 2 quarters of an 8-pixel tile.

    Only the low-resolution image ships with these data (600 x 600 pixels, about 7 pixels between
    spot centres), so an 8-pixel tile is one spot and its first ring; a pretrained vision model has
    nothing to read at that size. The features go through :func:`gearsx.pp.extract_patches` (scale
    factors from ``uns['spatial']``) and :func:`gearsx.tl.embed_patches` like any image model's.
    """
    import tempfile

    import torch

    s.uns["spatial"] = {slide: s.uns["spatial"][slide]}
    with tempfile.TemporaryDirectory() as tmp:
        gx.pp.extract_patches(s, library_id=slide, size=8, resolution="lowres", path=Path(tmp) / "tiles.npy")
        pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        gx.tl.embed_patches(s, pool, progress=False)


def score(rows, base, truth, labels, coords, vote_k):
    for refine, lab in ((False, labels), (True, spatial_majority_vote(labels, coords, k=vote_k))):
        m = gx.metrics.domain_scores(truth, lab, spatial=coords)
        rows.append(
            {**base, "refine": refine, "vote_k": vote_k, "ari": m["ari"], "nmi": m["nmi"], "coherence": m["coherence"]}
        )
        print(rows[-1], flush=True)


def hops(rep: str) -> int:
    """``n_hops`` of a domain-embedding representation: the number after ``_hops``, else 0 (the default)."""
    return int(rep.rsplit("_hops", 1)[1]) if "_hops" in rep else 0


def per_slide(a, name, seed, reps, rows, encoder, vote_k):
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
            elif rep == "gearsx_domain" or rep.startswith("gearsx_domain_hops"):
                select_genes(s)
                gx.tl.domain_embedding(s, n_hops=hops(rep), random_state=seed, progress=False)
                key, kw = "X_gears_domain", {}
            elif rep == "gearsx_domain_image":
                if "spatial" not in s.uns:
                    print(f"{name}: no H&E image, image view skipped", flush=True)
                    continue
                select_genes(s)
                image_features(s, slide)
                gx.tl.domain_embedding(s, image_key="X_image", random_state=seed, progress=False)
                key, kw = "X_gears_domain", {}
            elif rep in ENCODER_REPS:
                key = "X_gears_backbone" if rep == "gearsx_backbone" else "X_gears"
                s.obsm[key] = encoder[key][(a.obs["slide"] == slide).to_numpy()]
                if rep == "gearsx_encoder_smoothed":
                    gx.tl.spatial_smooth(s, use_rep=key, n_neighbors=6, slide_key="slide")
                    key = "X_gears_smoothed"
            elif rep == "graphst":
                if s.n_vars < 3000:
                    print(f"{name}: GraphST skipped (its preprocessing needs >= 3,000 genes)", flush=True)
                    continue
                s.obsm["X_graphst"] = graphst_embedding(s, seed)
                key = "X_graphst"
            else:
                continue
            gx.tl.cluster_domains(s, method="mclust", use_rep=key, n_clusters=k, random_state=seed, **kw)
            dt = time.perf_counter() - t + (encoder["time_s"] if rep in ENCODER_REPS else 0.0)
            base = {"data": name, "slide": slide, "seed": seed, "rep": rep, "time_s": dt}
            score(rows, base, s.obs["truth"], s.obs["gears_domain"].to_numpy(), s.obsm["spatial"], vote_k)
            if rep == "gearsx_domain":  # sensitivity: the same embedding through 20 PCs (the default before 'auto')
                gx.tl.cluster_domains(s, method="mclust", n_clusters=k, n_pcs=20, random_state=seed)
                base = {**base, "rep": "gearsx_domain_pc20"}
                score(rows, base, s.obs["truth"], s.obs["gears_domain"].to_numpy(), s.obsm["spatial"], vote_k)


def joint(a, name, seed, rows, vote_k, rep="gearsx_domain_joint"):
    s = a.copy()
    t = time.perf_counter()
    select_genes(s, batch_key="slide")
    gx.tl.domain_embedding(s, slide_key="slide", n_hops=hops(rep), random_state=seed, progress=False)
    k = s.obs["truth"].nunique()
    gx.tl.cluster_domains(s, method="mclust", n_clusters=k, random_state=seed)
    dt = (time.perf_counter() - t) / s.obs["slide"].nunique()
    for slide in s.obs["slide"].unique():
        sel = (s.obs["slide"] == slide).to_numpy()
        base = {"data": name, "slide": slide, "seed": seed, "rep": rep, "time_s": dt}
        score(rows, base, s.obs["truth"][sel], s.obs["gears_domain"].to_numpy()[sel], s.obsm["spatial"][sel], vote_k)


def encoder_embeddings(a, seed):
    """The geometry encoder's ``obsm`` (``'X_gears'``, ``'X_gears_backbone'``), fitted on all slides of ``a``."""
    st = a.copy()
    multi = st.obs["slide"].nunique() > 1
    if st.n_vars > 2000:
        gx.pp.highly_variable_genes(st, batch_key="slide" if multi else None, n_top_genes=2000)
        st = st[:, st.var["highly_variable"].to_numpy()].copy()
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    gx.tl.fit_encoder(st, slide_key="slide", random_state=seed, progress=False)
    return {k: st.obsm[k] for k in ("X_gears", "X_gears_backbone")}


def write(rows, args):
    """Summarise ``rows`` into ``args.out``: one row per data set, representation and refinement."""
    df = pd.DataFrame(rows)
    df["vote_k"] = df["vote_k"].fillna(6).astype(int) if "vote_k" in df else 6  # rows before --vote-k: 6
    keys = ["data", "rep", "refine", "vote_k"]
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
    write_results(
        out,
        "# Spatial domains (benchmarks/bench_domains.py, 2-core CPU machine)\n\n"
        f"Seeds: {sorted(df['seed'].unique().tolist())}. Clustering: `gx.tl.cluster_domains(method='mclust')`, "
        "`n_clusters` = number of reference labels. ARI/NMI/coherence: mean over slides and seeds; `ari_seed_sd`: "
        "SD over seeds of the mean over slides; `vote_k`: neighbours in the vote of `refine=True` (rows with "
        "`refine` False do not use it); slide columns: ARI per slide (mean over seeds); `time_s`: end to "
        "end per slide. Representations: see the module docstring of `benchmarks/bench_domains.py`.\n\n"
        + summary.to_markdown(index=False, floatfmt=".3f"),
        appendable=True,  # the script's --append keeps earlier runs' rows
    )
    df.to_csv(out.with_suffix(".csv"), index=False)  # one row per slide, seed, representation (tutorial 03 plots it)
    print(summary.to_string(), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=["dlpfc", "osmfish"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--reps", nargs="+", default=list(ALL_REPS), choices=ALL_REPS)
    parser.add_argument(
        "--graphst-seeds", nargs="+", type=int, default=None,
        help="run GraphST for these seeds only (default: all --seeds; it takes ~8 min per slide on 2 cores)",
    )  # fmt: skip
    parser.add_argument("--vote-k", type=int, default=6, help="neighbours in the vote of refine=True")
    parser.add_argument("--out", default=str(OUT), help="markdown table to write")
    parser.add_argument(
        "--append", action="store_true",
        help="keep the rows of the existing csv next to --out, except those this run recomputes",
    )  # fmt: skip
    args = parser.parse_args()
    gx.settings.progress_bar = False
    rows = []
    old = Path(args.out).with_suffix(".csv")
    if args.append and old.exists():
        prev = pd.read_csv(old, dtype={"slide": str})
        reps = set(args.reps) | ({"gearsx_domain_pc20"} if "gearsx_domain" in args.reps else set())
        vote = prev["vote_k"].fillna(6) if "vote_k" in prev else pd.Series(6, index=prev.index)
        redo = prev["data"].isin(args.sets) & prev["rep"].isin(reps) & prev["seed"].isin(args.seeds)
        redo &= vote == args.vote_k
        rows = prev[~redo].to_dict("records")
    for name in args.sets:
        a = load(name)
        if a is None:
            print(f"{name}: data not found under {DATA}, skipped", flush=True)
            continue
        for seed in args.seeds:
            t = time.perf_counter()
            encoder = encoder_embeddings(a, seed) if set(ENCODER_REPS) & set(args.reps) else None
            if encoder is not None:  # the encoder's fit counts in its rows' time, shared by the slides
                encoder["time_s"] = (time.perf_counter() - t) / a.obs["slide"].nunique()
            reps = [r for r in args.reps if r != "graphst" or args.graphst_seeds is None or seed in args.graphst_seeds]
            per_slide(a, name, seed, reps, rows, encoder, args.vote_k)
            for rep in ("gearsx_domain_joint", "gearsx_domain_joint_hops1"):
                if rep in args.reps and a.obs["slide"].nunique() > 1:
                    joint(a, name, seed, rows, args.vote_k, rep)
            write(rows, args)  # after every data set and seed, so a long run leaves its table behind


if __name__ == "__main__":
    main()
