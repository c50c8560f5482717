"""gearsx vs moscot, Tangram and novoSpaRc under pseudo-spot protocols (issues #7 and #21).

Run: ``pip install --group bench -e .`` once, then
``.venv/bin/python benchmarks/bench_peers.py --protocol same-tissue|same-cells|disjoint --seeds 0 1 2 [--sets ...]``.
Writes ``benchmarks/results/peers_<protocol>.md`` (``peers_same_tissue.md``, ``peers_same_cells.md`` or
``peers_disjoint.md``;
``--out`` for another file), its per-seed rows at full precision (``.csv``, read back by ``--append``)
and one figure per data set beside it.

Protocol, per single-cell-resolution data set in ../shared/data:

1. ``--protocol disjoint`` (default): split the tissue into a training part and a held-out part: by
   section where there are several (MERFISH: slice bregma 0.26 trains, 0.21 is held out), else the
   60% / 40% halves of the tissue along its long axis (osmFISH, seqFISH, Xenium subset, a 20-voxel
   z-slab of STARmap 3D), so the query cells come from a region the spots do not cover.
   ``--protocol same-tissue``: the cells of one section are split at random (per seed) in halves;
   one half makes the spots, the other is the query (same tissue, never the cells inside the spots).
   The set ``merfish-adjacent`` makes the spots of every cell of section bregma 0.26 and queries the
   adjacent section (0.21, 50 um away): the same tissue, another section. The sets ``bdtnp`` and
   ``bdtnp-poisson`` (not run by default) are novoSpaRc's own data, the BDTNP Drosophila embryo atlas
   (84 genes; in situ intensities turned into counts with or without sampling noise, see ``_bdtnp``).
   ``--protocol same-cells``: #21's first experiment, where the cells of an independent
   segmentation of a section were mapped back onto spots of the same section. Every cell of one
   section is measured twice (``split_counts``: each count goes to one of two halves at random), one
   measurement makes the spots, the other is the query: the same cells, so a query cell that lies
   inside a spot (about 28% of them at the spots' diameter below) has its own other half there.
   Not for ``merfish-adjacent`` (another section).
2. Pseudo-Visium spots of the training part (``gx.datasets.pseudo_spots``, hexagonal, diameter
   0.55 x pitch; the pitch is chosen so the part yields about 1,000 spots, or one spot per three
   cells for small data, since the sections are smaller than a Visium capture area; with
   ``--spot-cells C`` the pitch that puts ``C`` cells in a spot on average, as in a Visium spot of a
   dense tissue).
3. Reconstruct the held-out cells (at most ``--max-cells``, a seeded subsample, identical for all
   methods) from expression only. ``--platform-sd S`` (default 0: none) first gives the query another
   platform's gene capture (see ``platform_effect``): each gene's counts scaled by its own factor
   ``exp(N(0, S^2))`` and drawn again (Poisson), the same for every method; spots and cells then differ
   as scRNA-seq and a spatial panel do, gene by gene, which the pseudo-spots of one data set never do.

   * gearsx: encoder on the spots, SC adapter on the cells, GEARS with default settings, then
     ``gx.tl.reconstruct`` (``anchor='auto'``); ``gearsx-transport`` adds ``anchor_transport=True``
     (a balanced transport plan weighed with the anchors); ``gearsx-intrinsic`` forces ``anchor=None``, and
     ``--with-intrinsic`` also scores the intrinsic layout of the gearsx run itself;
   * knn-probe: each cell at the mean position of its 20 most similar spots in the adapted
     embedding (cosine), the baseline reference anchoring has to beat;
   * isomap-probe: the cells' own adapted embeddings laid out by Isomap (10 neighbours), with no
     reference positions: the baseline the intrinsic mode has to beat;
   * regression-probe: a gradient-boosting regressor (scikit-learn's ``HistGradientBoostingRegressor``,
     one per coordinate) trained on the spots' log-normalised expression to predict their
     coordinates, applied to the cells: what a plain supervised model of the reference makes of it;
   * moscot (``MappingProblem``, fused Gromov-Wasserstein with its defaults, joint local PCA of the
     shared genes): the plan-weighted mean of the spot coordinates;
   * Tangram (``tangram-sc``, cell mode, 1,000 epochs): a cell's position is the
     mapping-weighted mean of the spot coordinates;
   * novoSpaRc (``novosparc``, spot locations as target space, spot expression as the atlas,
     ``alpha_linear=0.5``, ``epsilon=5e-3``): the transport-weighted mean of the spot coordinates;
     ``novosparc-eps0.02``: the same with ``epsilon=0.02``, a smoother plan;
   * oracle: each cell at the centre of the spot nearest to its true position (the best any
     spot-resolution method can do).

4. Score with ``gx.metrics.evaluate_geometry`` against the true positions; wall time and peak
   resident memory above the start of each method (sampled every 0.2 s).
"""

import argparse
import functools
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
from _common import (
    DATA,
    PeakRSS,
    add_append_option,
    as_number,
    band_split,
    dense_x,
    first_table,
    lognorm,
    mean_sd_markdown,
    precise_rows,
    split_counts,
    with_counts,
    write_precise_rows,
    write_results,
)

import gearsx as gx

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("spearman", "stress1", "edge_auc", "trust20", "cont20")
#: Within a data set and seed, these rows come first, in this order; the peers follow in the page's order.
FIRST_ROWS = (
    "oracle",
    "gearsx",
    "gearsx (intrinsic)",
    "gearsx-intrinsic",
    "knn-probe",
    "isomap-probe",
    "regression-probe",
)


def make_spots(cells, target=1000, cells_per_spot=3, spot_cells=None):
    """Hexagonal pseudo-spots of diameter 0.55 x pitch over ``cells``.

    Default: the pitch gives about ``target`` spots, or one spot per ``cells_per_spot`` cells for
    small data (``spot_cells=None``). ``spot_cells=C``: the pitch is chosen so that a spot holds ``C``
    cells on average (spots with no cell dropped), as a Visium spot of a dense tissue does.
    """
    xy = cells.obsm["spatial"]
    area = float(np.prod(np.ptp(xy, axis=0)))
    if spot_cells is not None:
        # a spot of diameter 0.55 p covers 27% of its hexagon (sqrt(3)/2 p^2): C cells per spot at this pitch
        pitch = np.sqrt(spot_cells * area * np.sqrt(3) / 2 / (0.274 * len(cells)))
        for _ in range(8):  # correct for the tissue's own density (holes, edges) from the spots made
            spots = gx.datasets.pseudo_spots(cells, spot_diameter=0.55 * pitch, center_to_center=pitch, min_cells=1)
            mean = float(spots.obs["n_cells"].mean())
            if abs(mean / spot_cells - 1) < 0.1:
                break
            pitch *= np.sqrt(spot_cells / mean)
        return spots
    n_target = int(min(target, len(cells) / cells_per_spot))
    pitch = np.sqrt(area / n_target)
    for _ in range(20):
        spots = gx.datasets.pseudo_spots(cells, spot_diameter=0.55 * pitch, center_to_center=pitch, min_cells=1)
        if spots.n_obs >= 0.8 * n_target:
            return spots
        pitch *= 0.85
    return spots


def _embed(spots, query, seed):
    st, cells = gx.pp.prepare(spots, query, slide_key=None, n_top_genes=2000)
    gx.pp.mean_center_per_slide(st, slide_key=None)
    gx.pp.mean_center_per_slide(cells, slide_key=None)
    enc = gx.tl.fit_encoder(st, slide_key=None, progress=False, random_state=seed)
    gx.tl.fit_adapter(cells, enc, random_state=seed)
    return st, cells


def subsample(cells, max_cells, seed):
    """``cells``, or a seeded random ``max_cells`` of them (in their order) when it holds more."""
    if cells.n_obs <= max_cells:
        return cells
    return cells[np.sort(np.random.default_rng(seed).choice(cells.n_obs, max_cells, replace=False))].copy()


def train_gears(st, seed=0, *, slide_key=None, **train_kw):
    """A GEARS model trained on ``st`` with the benchmarks' miniset sizes (at most 80% of the spots)."""
    n_max = min(384, int(0.8 * st.n_obs))
    geo = gx.model.GEARS(st, slide_key=slide_key)
    geo.train(n_min=min(128, n_max), n_max=n_max, progress=False, random_state=seed, **train_kw)
    return geo


def run_gearsx(spots, query, seed=0, **reconstruct_kw):
    st, cells = _embed(spots, query, seed)
    geo = train_gears(st, seed)
    gx.tl.reconstruct(
        cells, geo, n_patch=min(384, cells.n_obs // 4), progress=False, random_state=seed, **reconstruct_kw
    )
    run_gearsx.last = cells  # the uncertainty and the anchoring record, for the report
    return cells.obsm["X_gears_spatial"]


def run_gearsx_intrinsic(spots, query, seed=0):
    return run_gearsx(spots, query, seed, anchor=None)


def run_knn_probe(spots, query, seed=0):
    """Each cell at the mean position of its 20 most similar spots in the adapted embedding (cosine)."""
    st, cells = _embed(spots, query, seed)
    m = gx.geometry.match_reference(
        cells.obsm["X_gears"], st.obsm["X_gears"], st.obsm["spatial"], k=20, temperature=None
    )
    return m.anchors


def run_isomap_probe(spots, query, seed=0):
    """The cells' own adapted embeddings laid out by Isomap (10 neighbours): no reference positions at all.

    The baseline the intrinsic mode has to beat: the geodesic distances of the cells' kNN graph in the
    same embedding GEARS reads, embedded in 2-D (scikit-learn's ``Isomap``).
    """
    from sklearn.manifold import Isomap

    _, cells = _embed(spots, query, seed)
    return Isomap(n_neighbors=10, n_components=2).fit_transform(cells.obsm["X_gears"])


def boosted_trees(x_train, xy_train, x_query, seed=0):
    """Coordinates of ``x_query`` from gradient-boosted trees fitted to ``x_train -> xy_train``.

    scikit-learn's ``HistGradientBoostingRegressor`` (300 iterations, otherwise its defaults), one per
    coordinate.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    return np.column_stack(
        [
            HistGradientBoostingRegressor(max_iter=300, random_state=seed).fit(x_train, xy_train[:, j]).predict(x_query)
            for j in range(xy_train.shape[1])
        ]
    )


def run_regression_probe(spots, query, seed=0):
    """Each cell where a regressor trained on the spots (expression -> coordinates) puts it.

    :func:`boosted_trees` on the log-normalised shared genes; no embedding, no transport.
    """
    genes = spots.var_names.intersection(query.var_names)
    sp, q = lognorm(spots[:, genes]), lognorm(query[:, genes])
    x_sp, x_q = dense_x(sp), dense_x(q)
    return boosted_trees(x_sp, np.asarray(sp.obsm["spatial"], float), x_q, seed)


def run_tangram(spots, query, seed=0):
    import tangram as tg

    sp, q = lognorm(spots), lognorm(query)
    tg.pp_adatas(q, sp, genes=None)
    amap = tg.map_cells_to_space(q, sp, mode="cells", device="cpu", num_epochs=1000, random_state=seed, verbose=False)
    w = np.asarray(amap.X)
    return (w / w.sum(1, keepdims=True)) @ sp.obsm["spatial"]


def run_novosparc(spots, query, seed=0, epsilon=5e-3):
    """novoSpaRc's fused transport of the cells onto the spots (``alpha_linear=0.5``), each cell at its row's barycentre.

    ``epsilon`` is the entropic regularisation: novoSpaRc's default, 5e-4, returns rows of NaN on these
    data at ``alpha_linear`` >= 0.7 and ran for over seven minutes on MERFISH at 0.5; 5e-3 is the smallest tried that runs on
    every set. ``novosparc-eps0.02`` (4x more) trades Spearman and Stress-1 for edge ROC-AUC.
    """
    import novosparc

    genes = spots.var_names.intersection(query.var_names)
    sp, q = lognorm(spots[:, genes]), lognorm(query[:, genes])
    q.X = dense_x(q)
    atlas = dense_x(sp)
    locs = np.asarray(sp.obsm["spatial"], dtype=float)
    tissue = novosparc.cm.Tissue(dataset=q, locations=locs, atlas_matrix=atlas, markers_to_use=np.arange(len(genes)))
    tissue.setup_reconstruction(num_neighbors_s=5, num_neighbors_t=5, verbose=False)
    tissue.reconstruct(alpha_linear=0.5, epsilon=epsilon, verbose=False)
    w = np.asarray(tissue.gw)
    return (w / w.sum(1, keepdims=True)) @ locs


def run_moscot(spots, query, seed=0):
    """moscot's ``MappingProblem`` (fused Gromov-Wasserstein, its defaults), as in its mapping tutorial."""
    import scanpy as sc
    from moscot.problems.space import MappingProblem

    genes = spots.var_names.intersection(query.var_names)
    sp, q = lognorm(spots[:, genes]), lognorm(query[:, genes])
    sc.pp.pca(q, n_comps=min(30, len(genes) - 1), random_state=seed)
    problem = MappingProblem(adata_sc=q, adata_sp=sp).prepare(
        sc_attr={"attr": "obsm", "key": "X_pca"}, xy_callback="local-pca", var_names=list(genes)
    )
    problem = problem.solve()
    plan = np.asarray(next(iter(problem.solutions.values())).transport_matrix)  # spots x cells
    w = plan.T
    return (w / w.sum(1, keepdims=True)) @ np.asarray(sp.obsm["spatial"], float)


def load(name, protocol="disjoint", seed=0):
    """(spot-making cells, query cells) with counts in X and positions in obsm['spatial'], or None.

    ``disjoint``: the query cells come from another region (another section for MERFISH, else the
    last 40% of the tissue along its long axis). ``same-tissue``: the cells of the section are split
    at random (``seed``) in halves; one half makes the spots, the other is the query. ``same-cells``:
    every cell of the section twice, as two halves of its counts (:func:`split_counts`).
    """
    if name == "osmfish":
        f = DATA / "osmfish_mouse_sscortex" / "osmfish_mouse_sscortex.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
        a.obsm["spatial"] = np.asarray(a.obsm["spatial"], float) * float(
            np.sqrt(np.median(a.obs["size_um2"] / a.obs["size_pix"]))
        )
    elif name in ("merfish", "merfish-adjacent"):
        f = DATA / "merfish_mouse_hypothalamus" / "merfish_mouse_hypothalamus.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
        a = a[np.asarray(a.X.sum(1)).ravel() > 0].copy()
        if name == "merfish-adjacent" and protocol == "same-cells":
            msg = "--protocol same-cells measures one section twice; merfish-adjacent has two sections"
            raise ValueError(msg)
        if protocol == "disjoint" or name == "merfish-adjacent":
            return a[a.obs["slice"] == "bregma_0.26"].copy(), a[a.obs["slice"] == "bregma_0.21"].copy()
        a = a[a.obs["slice"] == "bregma_0.26"].copy()
    elif name == "seqfish":
        f = DATA / "seqfish_mouse_visualcortex" / "seqfish_visualcortex_zhu2018.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
    elif name == "xenium":
        f = DATA / "xenium_mouse_brain_subset" / "xenium_mouse_brain_subset.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
    elif name == "starmap":
        f = DATA / "starmap3d_mouse_visualcortex" / "starmap3d_mouse_visualcortex.h5ad"
        if not f.exists():
            return None
        a = ad.read_h5ad(f)
        z = a.obsm["spatial"][:, 2]
        a = a[(z >= 40) & (z < 60)].copy()
        a.obsm["spatial"] = np.asarray(a.obsm["spatial"][:, :2], float)
    elif name in ("bdtnp", "bdtnp-poisson"):
        a = _bdtnp(poisson=name == "bdtnp-poisson", seed=seed)
        if a is None:
            return None
    else:
        raise ValueError(name)
    a = a[np.asarray(a.X.sum(1)).ravel() > 0].copy()
    if protocol == "same-cells":
        return split_counts(a, 20_000 + seed)
    if protocol == "same-tissue":
        train = np.random.default_rng(seed).random(a.n_obs) < 0.5
    else:
        train = band_split(a.obsm["spatial"])
    return a[train].copy(), a[~train].copy()


def platform_effect(query, sd: float, seed: int):
    """The query as another platform would count it: per-gene capture factors, counts drawn again.

    Each gene's expected counts are scaled by ``exp(N(0, sd^2))`` (one factor per gene, seeded by
    ``seed``; ``sd=0.7`` puts 95% of the factors within 4x either way) and the counts drawn from a
    Poisson of that mean; cells left without a count are dropped. Same-tissue pseudo-spots and their
    query come from one data set, so without this their genes are captured alike, which flatters every
    method that compares expression across the two sides.
    """
    rng = np.random.default_rng(10_000 + seed)
    factor = np.exp(rng.normal(0.0, sd, query.n_vars))
    return with_counts(query, rng.poisson(dense_x(query) * factor))


def _bdtnp(*, poisson: bool, seed: int):
    """The BDTNP Drosophila embryo atlas (novoSpaRc's own data) as counts on the (x, z) plane, or None.

    The atlas holds in situ intensities (0-2.4 per gene and bin, 84 genes), not counts, so every method
    gets counts made from them: ``bdtnp`` the intensities x 100, rounded (the atlas's own values, without
    noise); ``bdtnp-poisson`` Poisson draws with mean intensity x 5 (about 100 counts per bin, the
    sampling noise of a shallow single-cell profile of these genes; drawn per ``seed``). Positions are
    the (x, z) projection of the embryo's surface, the plane of novoSpaRc's tutorial, which keeps 81%
    of each bin's ten nearest neighbours in 3D.
    """
    import scipy.sparse as sp

    f = DATA / "bdtnp_drosophila_embryo" / "bdtnp_drosophila_embryo.h5ad"
    if not f.exists():
        return None
    atlas = ad.read_h5ad(f)
    x = np.asarray(atlas.X, dtype=np.float64)
    counts = np.random.default_rng(seed).poisson(x * 5) if poisson else np.rint(x * 100)
    a = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=atlas.obs[[]].copy(), var=atlas.var[[]].copy())
    a.obsm["spatial"] = np.asarray(atlas.obsm["spatial_xz"], dtype=np.float64)
    return a


def _with_previous_rows(args, rows, lines):
    """Add the existing page's per-seed rows that this run did not recompute (``--append``).

    A row is recomputed when its data set, seed and method were all asked for in this run (``gearsx
    (intrinsic)`` with ``gearsx`` under ``--with-intrinsic``); a new row takes the place of the old one.
    Rows come out grouped by data set (in the order first seen) and seed; within a seed, the oracle,
    gearsx and the probe first, then the peers in the page's order.
    """
    methods = set(args.methods) | (
        {"gearsx (intrinsic)"} if args.with_intrinsic and "gearsx" in args.methods else set()
    )
    redo = {(d, s, m) for d in args.sets for s in args.seeds for m in methods}
    new = {(r["data"], r["seed"], r["method"]): (r, line) for r, line in zip(rows, lines, strict=True)}
    precise = precise_rows(args.out, ["data", "seed", "method"])
    merged, n_kept, n_precise = [], 0, 0
    for old in first_table(args.out):
        key = (old["data"], int(old["seed"]), old["method"])
        if key in new:
            merged.append(new.pop(key))
        elif key not in redo:
            row = {"data": key[0], "seed": key[1], "method": key[2], **{k: as_number(old[k]) for k in METRICS}}
            row["time"] = as_number(old["time (s)"])
            full = precise.get((key[0], str(key[1]), key[2]))
            if full is not None:
                row.update({k: float(full[k]) for k in [*METRICS, "time"]})
                n_precise += 1
            merged.append((row, "| " + " | ".join(old.values()) + " |"))
            n_kept += 1
    merged += list(new.values())
    gearsx_time = {(r["data"], r["seed"]): r["time"] for r, _ in merged if r["method"] == "gearsx"}
    for r, _ in merged:  # the page prints '-' for the intrinsic layout: it comes from the gearsx run
        if r["method"] == "gearsx (intrinsic)" and np.isnan(r["time"]):
            r["time"] = gearsx_time.get((r["data"], r["seed"]), np.nan)
    order = {d: i for i, d in enumerate(dict.fromkeys(r["data"] for r, _ in merged))}
    first = {m: i for i, m in enumerate(FIRST_ROWS)}
    merged.sort(key=lambda e: (order[e[0]["data"]], e[0]["seed"], first.get(e[0]["method"], len(first))))
    print(f"--append: kept {n_kept} rows of {args.out} ({n_precise} at full precision from its .csv)", flush=True)
    return [r for r, _ in merged], [line for _, line in merged]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-cells", type=int, default=5000)
    parser.add_argument("--sets", nargs="+", default=["osmfish", "merfish", "seqfish", "xenium", "starmap"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["gearsx", "knn-probe", "regression-probe", "tangram", "novosparc", "novosparc-eps0.02", "moscot"],
    )
    parser.add_argument("--protocol", choices=["disjoint", "same-tissue", "same-cells"], default="disjoint")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--with-intrinsic",
        action="store_true",
        help="also score the gearsx run's intrinsic layout (before anchoring), from the same trained model",
    )
    parser.add_argument(
        "--platform-sd",
        type=float,
        default=0.0,
        help="SD of the log per-gene capture factors given to the query (another platform; 0: none)",
    )
    parser.add_argument(
        "--spot-cells",
        type=float,
        default=None,
        help="mean cells per pseudo-spot (Visium of a dense tissue: about 10); default: about 1,000 spots",
    )
    parser.add_argument(
        "--dump", type=Path, default=None, help="folder for one .npz per gearsx run (layouts, anchors, truth)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown table to write (default: results/peers_<protocol>.md)"
    )
    add_append_option(parser)
    args = parser.parse_args()
    if args.out is None:  # one file per protocol: a run of one never overwrites the other's table
        args.out = RESULTS / f"peers_{args.protocol.replace('-', '_')}.md"
    gx.settings.progress_bar = False
    runners = {
        "gearsx": run_gearsx,
        "gearsx-transport": functools.partial(run_gearsx, anchor_transport=True),
        "gearsx-intrinsic": run_gearsx_intrinsic,
        "knn-probe": run_knn_probe,
        "isomap-probe": run_isomap_probe,
        "regression-probe": run_regression_probe,
        "tangram": run_tangram,
        "novosparc": run_novosparc,
        "novosparc-eps0.02": functools.partial(run_novosparc, epsilon=0.02),
        "moscot": run_moscot,
    }
    header = [
        "| data | seed | cells (query) | spots | method | "
        + " | ".join(METRICS)
        + " | time (s) | peak mem (GB) | gearsx mode | uncertainty-error Spearman |",
        "|---|---|---|---|---|" + "---|" * (len(METRICS) + 4),
    ]
    rows, lines = [], []
    for name in args.sets:
        for seed in args.seeds:
            parts = load(name, args.protocol, seed)
            if parts is None:
                print(f"{name}: data not found under {DATA}, skipped", flush=True)
                break
            train, held = parts
            spots = make_spots(train, spot_cells=args.spot_cells)
            held = subsample(held, args.max_cells, seed)
            if args.platform_sd > 0:
                held = platform_effect(held, args.platform_sd, seed)
            truth = np.asarray(held.obsm["spatial"], float)
            for method in args.methods:
                if method == "oracle":  # each cell at the centre of the spot nearest to its true position
                    from scipy.spatial import cKDTree

                    centres = np.asarray(spots.obsm["spatial"], float)
                    m = gx.metrics.evaluate_geometry(centres[cKDTree(centres).query(truth)[1]], truth)
                    rows.append({"data": name, "seed": seed, "method": method, **m, "time": 0.0})
                    vals = " | ".join(f"{m[k]:.3f}" for k in METRICS)
                    lines.append(
                        f"| {name} | {seed} | {held.n_obs} | {spots.n_obs} | oracle | {vals} | 0 | 0.00 |  |  |"
                    )
                    print(lines[-1], flush=True)
                    continue
                query = held.copy()
                del query.obsm["spatial"]  # expression only
                t = time.perf_counter()
                try:
                    with PeakRSS() as mem:
                        xy = runners[method](spots.copy(), query, seed)
                except Exception as err:  # noqa: BLE001 - a failing peer is reported, not fatal
                    print(f"{name} {method}: failed: {err!r}", flush=True)
                    continue
                dt = time.perf_counter() - t
                m = gx.metrics.evaluate_geometry(xy, truth)
                mode, unc_r = "", ""
                if method.startswith("gearsx"):
                    from scipy.stats import spearmanr

                    cells = run_gearsx.last
                    mode = cells.uns["gears"]["anchor"]["mode"]
                    err = np.linalg.norm(xy - truth, axis=1) if mode == "reference" else None
                    if err is not None:
                        unc_r = f"{spearmanr(cells.obs['gears_uncertainty'], err)[0]:.3f}"
                rows.append({"data": name, "seed": seed, "method": method, **m, "time": dt})
                row = f"| {name} | {seed} | {held.n_obs} | {spots.n_obs} | {method} | " + " | ".join(
                    f"{m[k]:.3f}" for k in METRICS
                )
                lines.append(row + f" | {dt:.0f} | {mem.gb:.2f} | {mode} | {unc_r} |")
                print(lines[-1], flush=True)
                if method == "gearsx" and args.dump is not None:
                    c = run_gearsx.last
                    args.dump.mkdir(parents=True, exist_ok=True)
                    np.savez(
                        args.dump / f"{name}_{seed}.npz", truth=truth, layout=xy,
                        **{k: c.obsm[f"X_gears_{k}"] for k in ("intrinsic", "anchor") if f"X_gears_{k}" in c.obsm},
                        uncertainty=c.obs["gears_uncertainty"].to_numpy(),
                    )  # fmt: skip
                if method == "gearsx" and args.with_intrinsic:
                    # the same run's intrinsic layout (before anchoring; the layout itself when not anchored)
                    key = "X_gears_intrinsic" if mode == "reference" else "X_gears_spatial"
                    m = gx.metrics.evaluate_geometry(run_gearsx.last.obsm[key], truth)
                    rows.append({"data": name, "seed": seed, "method": "gearsx (intrinsic)", **m, "time": dt})
                    vals = " | ".join(f"{m[k]:.3f}" for k in METRICS)
                    lines.append(
                        f"| {name} | {seed} | {held.n_obs} | {spots.n_obs} | gearsx (intrinsic) | {vals} | - | - |  |  |"
                    )
                    print(lines[-1], flush=True)
    if args.append:
        rows, lines = _with_previous_rows(args, rows, lines)
    lines = header + lines
    args.out.parent.mkdir(exist_ok=True)
    if rows:
        import matplotlib

        matplotlib.use("agg")
        import pandas as pd

        table = pd.DataFrame(rows)
        write_precise_rows(args.out, rows, ["data", "seed", "method", *METRICS, "time"])
        # four decimals: several same-tissue margins are below 0.001
        summary = mean_sd_markdown(table, ["data", "method"], [*METRICS, "time"], digits=4)
        seeds = sorted(table["seed"].unique().tolist())
        lines += ["", f"Mean ± SD over seeds {seeds}:", "", summary]
        for data, part in table.groupby("data", sort=False):
            gx.pl.method_comparison(
                part,
                metrics=["spearman", "stress1", "edge_auc"],
                show=False,
                save=str(args.out.with_suffix(f".{data}.png")),
            )
    write_results(
        args.out,
        f"# gearsx vs peers, {args.protocol} protocol"
        + (f", query with another platform's gene capture (SD {args.platform_sd:g})" if args.platform_sd > 0 else "")
        + (f", spots of {args.spot_cells:g} cells on average" if args.spot_cells else "")
        + " (benchmarks/bench_peers.py, 2-core CPU machine)\n\n"
        "Stress-1: lower is better; all other metrics: higher is better. Peak memory: resident memory above the"
        " level when the method started (a lower bound for later data sets: the process keeps what it holds).\n\n"
        + "\n".join(lines),
        appendable=True,  # the script's --append keeps earlier runs' rows
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
