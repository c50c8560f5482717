"""The main job run by ``make demo`` / ``gearsx demo``.

simulate -> prepare/centre -> fit the shared encoder on the slides -> fit the SC adapter ->
train the GEARS geometry model -> reconstruct the single cells' layout -> score it against the
true positions next to two baselines -> spatial communities on the reconstruction -> figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ._keys import Key
from ._utils import check_positive_int

__all__ = ["run_demo"]

STATUS = (
    "gearsx demo: GEARS reconstruction of unpaired single cells from simulated Visium-like slides, scored "
    "against the true positions next to two baselines (expression PCA, random coordinates). Spatial "
    "communities use scanpy's Leiden on the reconstruction (gx.tl.cluster_domains does domains of ST spots)."
)


#: Fewest cells per simulated section the demo was checked to run on (about 30 spots a slide: enough to
#: train on, too few to hold a validation band out).
MIN_DEMO_CELLS = 1_000


def check_demo_options(out_dir: str | Path, random_state: int, n_cells_per_slide: int, gears_epochs: int) -> Path:
    """Return ``out_dir`` as a path, or raise naming the option: checked before the minutes of work."""
    check_positive_int(random_state, name="random_state", minimum=0)
    check_positive_int(n_cells_per_slide, name="n_cells_per_slide", minimum=MIN_DEMO_CELLS)
    check_positive_int(gears_epochs, name="gears_epochs")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        msg = f"`out_dir`={str(out)!r} is a file; give a folder for the demo's tables and figures."
        raise NotADirectoryError(msg)
    return out


def run_demo(
    out_dir: str | Path = "gearsx_demo_output",
    *,
    random_state: int = 0,
    n_cells_per_slide: int = 20_000,
    gears_epochs: int = 12,
) -> Path:
    """Run the whole pipeline on the embedded simulator and write tables and figures to ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created if missing; files in it are replaced).
    random_state
        Seed of the simulation, the models and the baselines.
    n_cells_per_slide
        Size of each simulated section (at least 1,000).
    gears_epochs
        Training epochs of the geometry model (32 batches each).

    Returns
    -------
    The output folder.
    """
    # Over 80 lines on purpose: the demo is one script users read top to bottom, one public call per step.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    from . import datasets, metrics, model, pl, pp, tl

    out = check_demo_options(out_dir, random_state, n_cells_per_slide, gears_epochs)
    out.mkdir(parents=True, exist_ok=True)
    print(STATUS)
    t0 = time.perf_counter()

    def done(step: str) -> None:
        print(f"{step} ({time.perf_counter() - t0:.1f} s)", flush=True)

    adata_st, adata_sc = datasets.simulate_tissue(n_cells_per_slide=n_cells_per_slide, random_state=random_state)
    done(
        f"[1/6] simulated {adata_st.n_obs} spots on {adata_st.obs[Key.slide].nunique()} slides and "
        f"{adata_sc.n_obs} single cells x {adata_sc.n_vars} genes"
    )

    adata_st, adata_sc = pp.prepare(adata_st, adata_sc, slide_key=Key.slide)
    pp.mean_center_per_slide(adata_st, slide_key=Key.slide)
    pp.mean_center_per_slide(adata_sc, slide_key=None)
    encoder = tl.fit_encoder(adata_st, slide_key=Key.slide, random_state=random_state)
    tl.fit_adapter(adata_sc, encoder, random_state=random_state)
    enc, ada = adata_st.uns[Key.encoder], adata_sc.uns[Key.adapter]
    probe = enc.get("slide_probe", {})
    done(
        f"[2/6] encoder: overlap@20 with physical neighbours {enc['knn_overlap20']:.3f}, slide probe "
        f"{probe.get('balanced_accuracy', float('nan')):.3f} (chance {probe.get('chance', float('nan')):.3f}); "
        f"adapter: ST-vs-SC domain accuracy {ada['before']['domain_accuracy']:.3f} -> "
        f"{ada['after']['domain_accuracy']:.3f}"
    )

    # minisets of 128-384 spots (fewer on slides with fewer training spots; a 20% band of each slide is
    # held out for validation)
    geo = model.GEARS(adata_st, slide_key=Key.slide)
    geo.train(max_epochs=gears_epochs, random_state=random_state)
    last = geo.history_.iloc[-1]
    held_out = (  # no validation figures where the slides are too small to hold a band out
        f"Spearman {last['val_spearman']:.3f}, recall@15 {last['val_recall15']:.3f}"
        if "val_spearman" in last
        else "no figures (nothing held out)"
    )
    done(f"[3/6] GEARS trained; held-out minisets, validation {geo.train_params_['validation']}: {held_out}")

    tl.reconstruct(adata_sc, geo, n_patch=min(384, adata_sc.n_obs // 4), random_state=random_state)
    done(
        f"[4/6] reconstructed {adata_sc.n_obs} cells from {adata_sc.uns[Key.result]['reconstruct']['n_patches']} patches"
    )

    sc.pp.pca(adata_sc, n_comps=20, random_state=random_state)
    adata_sc.obsm["X_baseline_pca"] = adata_sc.obsm["X_pca"][:, :2]
    adata_sc.obsm["X_baseline_random"] = np.random.default_rng(random_state).uniform(size=(adata_sc.n_obs, 2))
    keys = {
        "GEARS (gx.tl.reconstruct)": Key.reconstruction,
        "baseline: expression PCA (2 PCs)": "X_baseline_pca",
        "baseline: random coordinates": "X_baseline_random",
    }
    table = pd.concat(
        [metrics.evaluate_adata(adata_sc, key, Key.spatial_gt, random_state=random_state) for key in keys.values()]
    )
    table.index = list(keys)
    table.index.name = "method"
    done("[5/6] scored the reconstruction and the baselines against the true positions")

    sc.pp.neighbors(adata_sc, use_rep=Key.reconstruction, n_neighbors=15, key_added="gears_spatial")
    sc.tl.leiden(
        adata_sc,
        resolution=0.3,
        neighbors_key="gears_spatial",
        key_added="gears_community",
        random_state=random_state,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    ari = adjusted_rand_score(adata_sc.obs[Key.domain], adata_sc.obs["gears_community"])
    report = {
        "encoder": {k: v for k, v in enc.items() if k != "params"},
        "adapter_before": ada["before"],
        "adapter_after": ada["after"],
        "gears_validation": {k: float(v) for k, v in last.items() if k.startswith("val_")},
        "reconstruct": adata_sc.uns[Key.result]["reconstruct"],
        "communities_ari_vs_true_domains": float(ari),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_jsonable))
    table.to_csv(out / "metrics.csv")
    (out / "metrics.md").write_text(
        f"{STATUS}\n\n{_markdown(table.round(4))}\n\nLeiden communities of the reconstruction vs true domains: "
        f"ARI {ari:.3f}\n"
    )
    pl.reconstruction(adata_sc, color=Key.domain, show=False, save=str(out / "reconstruction.png"))
    pl.distortion_heatmap(adata_sc, show=False, save=str(out / "distortion.png"))
    pl.stitching_diagnostics(adata_sc, show=False, save=str(out / "stitching.png"))
    plt.close("all")
    _layouts_figure(adata_st, adata_sc, out / "layouts.png")
    done(f"[6/6] spatial communities (ARI vs true domains {ari:.3f}); wrote figures and tables")
    print(table.round(3).to_string())
    print(
        f"\nOutputs in {out.resolve()}: metrics.csv, metrics.md, report.json, layouts.png, reconstruction.png, "
        "distortion.png, stitching.png"
    )
    return out


def _layouts_figure(adata_st, adata_sc, path) -> None:
    import matplotlib.pyplot as plt

    from .pl._reconstruction import _aligned

    gt = adata_sc.obsm[Key.spatial_gt]
    st0 = adata_st[adata_st.obs[Key.slide] == adata_st.obs[Key.slide].cat.categories[0]]
    panels = [
        (st0.obsm[Key.spatial], st0.obs[Key.domain], "ST slide_0 (spots)"),
        (gt, adata_sc.obs[Key.domain], "SC cells: true positions"),
        (_aligned(adata_sc.obsm[Key.reconstruction], gt), adata_sc.obs[Key.domain], "SC cells: GEARS (aligned)"),
        (_aligned(adata_sc.obsm["X_baseline_pca"], gt), adata_sc.obs[Key.domain], "SC cells: PCA baseline (aligned)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.8), layout="constrained")
    cats = adata_sc.obs[Key.domain].cat.categories
    colors = dict(zip(cats, plt.get_cmap("tab10").colors, strict=False))
    for ax, (xy, labels, title) in zip(axes, panels, strict=True):
        ax.scatter(xy[:, 0], xy[:, 1], c=[colors[c] for c in labels], s=4 if len(xy) > 2000 else 12, linewidths=0)
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")  # equal boxes: a tall layout widens its limits, never its box
        ax.set_xticks([])
        ax.set_yticks([])
        ax.invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[c], label=c) for c in cats]
    fig.legend(handles=handles, loc="outside right center", title="domain", frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(table) -> str:
    """Render a pipe table (pandas' ``to_markdown`` needs the optional ``tabulate``)."""
    header = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in zip(table.index, table.to_numpy(), strict=True)
    ]
    return "\n".join(lines)


def _jsonable(value):
    """Return a record's numpy value for JSON: arrays as lists (per-slide values, slide names), scalars as numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return float(value)
