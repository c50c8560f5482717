"""Encoder and adapter diagnostics on real multi-slide data (issue #5).

Run: ``.venv/bin/python benchmarks/bench_encoder.py`` (reads ../shared/data; skips missing sets).
Prints, per data set: overlap@20 of the encoder vs PCA(50) of the centred log data, the slide
probe vs chance, the per-slide norm ratio, training time, and for seqFISH (with its matched
scRNA-seq reference as the SC side) the adapter's domain accuracy before -> after.
"""

import time
import warnings

import anndata as ad
from _common import DATA, lognorm
from sklearn.decomposition import PCA

import gearsx as gx

warnings.filterwarnings("ignore")


def report(name, st, slide_key, spatial_key="spatial", sc_data=None):
    gx.pp.mean_center_per_slide(st, slide_key=slide_key)
    t = time.perf_counter()
    model = gx.tl.fit_encoder(st, slide_key=slide_key, spatial_key=spatial_key, progress=False)
    dt = time.perf_counter() - t
    enc = st.uns["gears_encoder"]
    groups = st.obs[slide_key].to_numpy() if slide_key else None
    pca = PCA(min(50, st.n_vars - 1), random_state=0).fit_transform(st.layers["gears_centered"])
    base = gx.metrics.knn_overlap(pca, st.obsm[spatial_key], k=20, groups=groups)
    probe = enc.get("slide_probe", {"balanced_accuracy": float("nan"), "chance": float("nan")})
    line = (
        f"{name:<22} n={st.n_obs:<6} genes={st.n_vars:<5} overlap@20 {enc['knn_overlap20']:.3f} (PCA {base:.3f}) "
        f"probe {probe['balanced_accuracy']:.3f} (chance {probe['chance']:.3f}) norm_ratio {enc['norm_ratio']:.3f} "
        f"train {dt:.0f}s"
    )
    if sc_data is not None:
        gx.pp.mean_center_per_slide(sc_data, slide_key=None)
        gx.tl.fit_adapter(sc_data, model)
        a = sc_data.uns["gears_adapter"]
        line += f" | adapter domain acc {a['before']['domain_accuracy']:.3f} -> {a['after']['domain_accuracy']:.3f}"
    print(line, flush=True)


def main():
    st, cells = gx.datasets.simulate_tissue(random_state=0)
    st, cells = gx.pp.prepare(st, cells, slide_key="slide")
    report("simulator", st, "slide", sc_data=cells)

    files = [DATA / "dlpfc_visium_libd" / f"dlpfc_{i}.h5ad" for i in (151673, 151675, 151676)]
    if all(f.exists() for f in files):
        slides = [ad.read_h5ad(f) for f in files]
        st = ad.concat(slides, label="slide", keys=["151673", "151675", "151676"], index_unique="-")
        st = lognorm(st)
        gx.pp.highly_variable_genes(st, batch_key="slide", n_top_genes=2000, subset=True)
        report("DLPFC (3 slides)", st, "slide")
    f = DATA / "merfish_mouse_hypothalamus" / "merfish_mouse_hypothalamus.h5ad"
    if f.exists():
        st = lognorm(ad.read_h5ad(f))
        report("MERFISH (2 sections)", st, "slice")
    f1 = DATA / "seqfish_mouse_visualcortex" / "seqfish_visualcortex_zhu2018.h5ad"
    f2 = DATA / "seqfish_mouse_visualcortex" / "tasic2016_scrna_reference.h5ad"
    if f1.exists() and f2.exists():
        st, cells = gx.pp.prepare(ad.read_h5ad(f1), ad.read_h5ad(f2).copy(), slide_key=None, n_top_genes=2000)
        report("seqFISH + scRNA", st, None, sc_data=cells)


if __name__ == "__main__":
    main()
