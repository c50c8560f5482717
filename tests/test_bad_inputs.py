"""The bad-input catalogue: one row per misuse of the public API.

Each row names the call, the exception a user gets, a fragment of its message (which must say
what is wrong and how to fix it) and the objects that must come out of the failed call
unchanged (no registry keys, no half-written results).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gearsx as gx


@dataclass
class Env:
    st: ad.AnnData
    sc: ad.AnnData
    raw_st: ad.AnnData
    raw_sc: ad.AnnData
    enc: object
    geo: object
    saved: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    raw_st, raw_sc = gx.datasets.simulate_tissue(n_slides=2, n_cells_per_slide=8000, n_genes=80, random_state=0)
    st, sc = gx.pp.prepare(raw_st, raw_sc, slide_key="slide", n_top_genes=60)
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    gx.pp.mean_center_per_slide(sc, slide_key=None)
    enc = gx.tl.fit_encoder(st, slide_key="slide", max_epochs=2, n_latent=8, n_hidden=(32,), enable_progress_bar=False)
    gx.tl.fit_adapter(sc, enc, max_epochs=1, progress=False)
    geo = gx.model.GEARS(st, slide_key="slide", n_out=4, dim=16, n_heads=2, n_inducing=8)
    geo.train(max_epochs=1, n_batches=2, n_min=64, n_max=96, enable_progress_bar=False)
    root = tmp_path_factory.mktemp("saved")
    enc.save(root / "enc")
    geo.save(root / "geo")
    return Env(
        st=st, sc=sc, raw_st=raw_st, raw_sc=raw_sc, enc=enc, geo=geo, saved={"enc": root / "enc", "geo": root / "geo"}
    )


# --- snapshots: what "unchanged" means ----------------------------------------------------------------
def _checksum(x) -> float:
    if x is None:
        return 0.0
    if sp.issparse(x):
        return float(np.nansum(x.data)) + x.nnz
    arr = np.asarray(x)
    return float(np.nansum(arr.astype(np.float64))) if np.issubdtype(arr.dtype, np.number) else float(arr.size)


def _uns_keys(uns, prefix="") -> tuple:
    out = []
    for k, v in uns.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out += _uns_keys(v, prefix + str(k) + "/")
    return tuple(sorted(out))


def snapshot(obj):
    if isinstance(obj, ad.AnnData):
        return (
            obj.shape,
            tuple(obj.obs.columns),
            int(pd.util.hash_pandas_object(obj.obs.astype(str), index=True).sum()),
            tuple(sorted(obj.obsm)),
            tuple(_checksum(obj.obsm[k]) for k in sorted(obj.obsm)),
            tuple(sorted(obj.layers)),
            tuple(_checksum(obj.layers[k]) for k in sorted(obj.layers)),
            tuple(sorted(obj.obsp)),
            _uns_keys(obj.uns),
            _checksum(obj.X),
        )
    if isinstance(obj, np.ndarray):
        return obj.shape, _checksum(obj)
    return repr(obj)


@dataclass
class Case:
    id: str
    make: Callable[[Env], tuple[Callable[[], object], list]]
    exc: type[BaseException]
    match: str


def _with(adata: ad.AnnData, edit: Callable[[ad.AnnData], None]) -> ad.AnnData:
    out = adata.copy()
    edit(out)
    return out


def _set_obs(key, values):
    def edit(a):
        a.obs[key] = values(a) if callable(values) else values

    return edit


def _nan_slide(a):
    s = a.obs["slide"].astype(object).to_numpy()
    s[:3] = np.nan
    a.obs["slide"] = pd.Categorical(s)


def _fresh_st(e: Env) -> ad.AnnData:
    """A copy of the prepared ST data, not registered anywhere (fresh uns without registry ids)."""
    a = e.st.copy()
    for k in [k for k in a.uns if k.startswith("_scvi")]:
        del a.uns[k]
    a.obs = a.obs[[c for c in a.obs.columns if not c.startswith("_scvi")]].copy()
    return a


def _call(f, *args, **kwargs):
    return lambda: f(*args, **kwargs)


def _save_broken(e: Env, tmp, what: str):
    import shutil

    path = tmp / what
    src = e.saved["geo"] if what.startswith("geo") else e.saved["enc"]
    shutil.copytree(src, path, dirs_exist_ok=True)
    if what.endswith("truncated"):
        data = (path / "model.pt").read_bytes()
        (path / "model.pt").write_bytes(data[: len(data) // 3])
    elif what.endswith("meta"):
        (path / "meta.json").write_text('{"class": "GEARS", "format_')
    elif what.endswith("foreign"):
        import torch

        torch.save({"weight": torch.zeros(3)}, path / "model.pt")
    elif what.endswith("notjson_dict"):
        (path / "meta.json").write_text(json.dumps([1, 2, 3]))
    return path


# --- the catalogue -------------------------------------------------------------------------------------------
def _cases() -> list[Case]:
    C = Case
    return [
        # pp.shared_genes / prepare / highly_variable_genes
        C(
            "shared_genes-one-dataset",
            lambda e: (_call(gx.pp.shared_genes, e.raw_st), [e.raw_st]),
            ValueError,
            "at least two",
        ),
        C(
            "shared_genes-duplicated-names",
            lambda e: (
                lambda a=_with(e.raw_sc, lambda a: setattr(a, "var_names", ["g"] * a.n_vars)): (
                    _call(gx.pp.shared_genes, e.raw_st, a),
                    [a],
                )
            )(),
            ValueError,
            "var_names_make_unique",
        ),
        C(
            "shared_genes-none-shared",
            lambda e: (
                lambda a=_with(e.raw_sc, lambda a: setattr(a, "var_names", [f"x{i}" for i in range(a.n_vars)])): (
                    _call(gx.pp.shared_genes, e.raw_st, a),
                    [a],
                )
            )(),
            ValueError,
            "same gene identifiers",
        ),
        C(
            "prepare-n_top_genes-0",
            lambda e: (
                _call(gx.pp.prepare, e.raw_st, e.raw_sc, slide_key="slide", n_top_genes=0),
                [e.raw_st, e.raw_sc],
            ),
            ValueError,
            "n_top_genes",
        ),
        C(
            "prepare-n_top_genes-negative",
            lambda e: (
                _call(gx.pp.prepare, e.raw_st, e.raw_sc, slide_key="slide", n_top_genes=-5),
                [e.raw_st, e.raw_sc],
            ),
            ValueError,
            "n_top_genes",
        ),
        C(
            "prepare-nan-slide",
            lambda e: (
                lambda a=_with(e.raw_st, _nan_slide): (_call(gx.pp.prepare, a, e.raw_sc, slide_key="slide"), [a])
            )(),
            ValueError,
            "missing values",
        ),
        C(
            "prepare-unknown-slide-key",
            lambda e: (_call(gx.pp.prepare, e.raw_st, e.raw_sc, slide_key="batch"), [e.raw_st]),
            KeyError,
            "slide_key",
        ),
        C(
            "prepare-negative-counts",
            lambda e: (
                lambda a=_with(e.raw_sc, lambda a: setattr(a, "X", a.X.toarray() - 1.0)): (
                    _call(gx.pp.prepare, e.raw_st, a, slide_key="slide"),
                    [a],
                )
            )(),
            ValueError,
            "negative values",
        ),
        C(
            "prepare-absurd-counts",
            lambda e: (
                lambda a=_with(e.raw_sc, lambda a: setattr(a, "X", a.X.toarray() * 1e12)): (
                    _call(gx.pp.prepare, e.raw_st, a, slide_key="slide"),
                    [a],
                )
            )(),
            ValueError,
            "beyond any count",
        ),
        C(
            "prepare-nan-expression",
            lambda e: (
                lambda a=_with(e.raw_sc, lambda a: setattr(a, "X", np.where(np.arange(a.n_vars) == 0, np.nan, a.X.toarray()))): (
                    _call(gx.pp.prepare, e.raw_st, a, slide_key="slide"),
                    [a],
                )
            )(),
            ValueError,
            "NaN",
        ),
        C(
            "prepare-missing-layer",
            lambda e: (_call(gx.pp.prepare, e.raw_st, e.raw_sc, slide_key="slide", layer="raw"), [e.raw_st, e.raw_sc]),
            KeyError,
            "layer",
        ),
        C(
            "hvg-unknown-batch-key",
            lambda e: (lambda a=e.st.copy(): (_call(gx.pp.highly_variable_genes, a, batch_key="nope"), [a]))(),
            KeyError,
            "batch_key",
        ),
        # pp.mean_center_per_slide
        C(
            "center-nan-slide",
            lambda e: (
                lambda a=_with(e.st, _nan_slide): (_call(gx.pp.mean_center_per_slide, a, slide_key="slide"), [a])
            )(),
            ValueError,
            "missing values",
        ),
        C(
            "center-beyond-float32",
            lambda e: (
                lambda a=_with(e.st, lambda a: setattr(a, "X", np.full(a.shape, 1e300))): (
                    _call(gx.pp.mean_center_per_slide, a, slide_key="slide"),
                    [a],
                )
            )(),
            ValueError,
            "float32",
        ),
        C(
            "center-missing-layer",
            lambda e: (
                lambda a=e.st.copy(): (_call(gx.pp.mean_center_per_slide, a, slide_key="slide", layer="nope"), [a])
            )(),
            KeyError,
            "layer",
        ),
        C(
            "center-unknown-slide-key",
            lambda e: (lambda a=e.st.copy(): (_call(gx.pp.mean_center_per_slide, a, slide_key="nope"), [a]))(),
            KeyError,
            "slide_key",
        ),
        # pp.extract_patches
        C(
            "patches-negative-scalef",
            lambda e: (lambda a=_visium(e, scalef=-0.1): (_call(gx.pp.extract_patches, a, size=8), [a]))(),
            ValueError,
            "positive number",
        ),
        C(
            "patches-zero-scalef",
            lambda e: (lambda a=_visium(e, scalef=0.0): (_call(gx.pp.extract_patches, a, size=8), [a]))(),
            ValueError,
            "positive number",
        ),
        C(
            "patches-missing-scalef",
            lambda e: (lambda a=_visium(e, scalef=None): (_call(gx.pp.extract_patches, a, size=8), [a]))(),
            KeyError,
            "tissue_hires_scalef",
        ),
        C(
            "patches-missing-spatial",
            lambda e: (
                lambda a=_with(_visium(e, 0.1), lambda a: a.obsm.pop("spatial")): (
                    _call(gx.pp.extract_patches, a, size=8),
                    [a],
                )
            )(),
            KeyError,
            "spatial",
        ),
        C(
            "patches-bad-resolution",
            lambda e: (lambda a=_visium(e, 0.1): (_call(gx.pp.extract_patches, a, resolution="medium"), [a]))(),
            ValueError,
            "resolution",
        ),
        C(
            "patches-fullres-without-image",
            lambda e: (lambda a=_visium(e, 0.1): (_call(gx.pp.extract_patches, a, resolution="fullres"), [a]))(),
            ValueError,
            "image=",
        ),
        # model.SharedEncoder / tl.fit_encoder
        C(
            "encoder-setup-nan-slide",
            lambda e: (
                lambda a=_with(_fresh_st(e), _nan_slide): (
                    _call(gx.model.SharedEncoder.setup_anndata, a, slide_key="slide"),
                    [a],
                )
            )(),
            ValueError,
            "missing values",
        ),
        C(
            "encoder-setup-missing-spatial",
            lambda e: (
                lambda a=_with(_fresh_st(e), lambda a: a.obsm.pop("spatial")): (
                    _call(gx.model.SharedEncoder.setup_anndata, a, slide_key="slide"),
                    [a],
                )
            )(),
            KeyError,
            "spatial",
        ),
        C(
            "encoder-setup-nan-coords",
            lambda e: (
                lambda a=_with(_fresh_st(e), lambda a: a.obsm["spatial"].__setitem__((0, 0), np.nan)): (
                    _call(gx.model.SharedEncoder.setup_anndata, a, slide_key="slide"),
                    [a],
                )
            )(),
            ValueError,
            "NaN",
        ),
        C(
            "fit_encoder-nan-slide",
            lambda e: (
                lambda a=_with(_fresh_st(e), _nan_slide): (_call(gx.tl.fit_encoder, a, slide_key="slide"), [a])
            )(),
            ValueError,
            "missing values",
        ),
        C(
            "fit_encoder-n_latent-0",
            lambda e: (lambda a=_fresh_st(e): (_call(gx.tl.fit_encoder, a, slide_key="slide", n_latent=0), [a]))(),
            ValueError,
            "n_latent",
        ),
        C(
            "fit_encoder-empty-hidden",
            lambda e: (lambda a=_fresh_st(e): (_call(gx.tl.fit_encoder, a, slide_key="slide", n_hidden=()), [a]))(),
            ValueError,
            "n_hidden",
        ),
        C(
            "fit_encoder-k_spatial-too-large",
            lambda e: (
                lambda a=_fresh_st(e): (
                    _call(gx.tl.fit_encoder, a, slide_key="slide", k_spatial=100_000, max_epochs=1),
                    [a],
                )
            )(),
            ValueError,
            "k_spatial",
        ),
        C(
            "fit_encoder-missing-layer",
            lambda e: (lambda a=_fresh_st(e): (_call(gx.tl.fit_encoder, a, slide_key="slide", layer="nope"), [a]))(),
            KeyError,
            "layer",
        ),
        C(
            "encoder-on-a-copy",
            lambda e: (lambda a=e.st[:500].copy(): (_call(gx.model.SharedEncoder, a), [a]))(),
            ValueError,
            "copy or subset",
        ),
        # tl.fit_adapter
        C(
            "fit_adapter-given-gears",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.tl.fit_adapter, a, e.geo), [a]))(),
            TypeError,
            "SharedEncoder",
        ),
        C(
            "fit_adapter-three-cells",
            lambda e: (lambda a=e.sc[:3].copy(): (_call(gx.tl.fit_adapter, a, e.enc), [a]))(),
            ValueError,
            "at least 10",
        ),
        C(
            "fit_adapter-unknown-mode",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.tl.fit_adapter, a, e.enc, mode="mlp"), [a]))(),
            NotImplementedError,
            "linear",
        ),
        C(
            "fit_adapter-other-genes",
            lambda e: (lambda a=e.sc[:, :30].copy(): (_call(gx.tl.fit_adapter, a, e.enc), [a]))(),
            ValueError,
            "genes",
        ),
        C(
            "fit_adapter-batch_size",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.tl.fit_adapter, a, e.enc, batch_size=2), [a]))(),
            ValueError,
            "batch_size",
        ),
        # model.GEARS construction and training
        C(
            "gears-coincident-coordinates",
            lambda e: (
                lambda a=_with(_fresh_st(e), lambda a: a.obsm.__setitem__("spatial", np.zeros((a.n_obs, 2)))): (
                    _call(gx.model.GEARS, a, slide_key="slide"),
                    [a],
                )
            )(),
            ValueError,
            "distinct positions",
        ),
        C(
            "gears-nan-slide",
            lambda e: (lambda a=_with(_fresh_st(e), _nan_slide): (_call(gx.model.GEARS, a, slide_key="slide"), [a]))(),
            ValueError,
            "missing values",
        ),
        C(
            "gears-missing-embedding",
            lambda e: (
                lambda a=_with(_fresh_st(e), lambda a: a.obsm.pop("X_gears")): (_call(gx.model.GEARS, a), [a])
            )(),
            KeyError,
            "fit_encoder",
        ),
        C(
            "gears-dim-heads",
            lambda e: (lambda a=_fresh_st(e): (_call(gx.model.GEARS, a, slide_key="slide", dim=30, n_heads=4), [a]))(),
            ValueError,
            "divisible",
        ),
        C(
            "gears-structure",
            lambda e: (
                lambda a=_fresh_st(e): (_call(gx.model.GEARS, a, slide_key="slide", structure="alphafold"), [a])
            )(),
            ValueError,
            "structure",
        ),
        C(
            "gears-targets",
            lambda e: (lambda a=_fresh_st(e): (_call(gx.model.GEARS, a, slide_key="slide", targets="oracle"), [a]))(),
            ValueError,
            "targets",
        ),
        C(
            "gears-n_out-1",
            lambda e: (lambda a=_fresh_st(e): (_call(gx.model.GEARS, a, slide_key="slide", n_out=1), [a]))(),
            ValueError,
            "n_out",
        ),
        C(
            "gears-3d-coordinates",
            lambda e: (
                lambda a=_with(_fresh_st(e), lambda a: a.obsm.__setitem__("spatial", np.ones((a.n_obs, 3)))): (
                    _call(gx.model.GEARS, a),
                    [a],
                )
            )(),
            ValueError,
            "(n_obs, 2)",
        ),
        C(
            "gears-train-validation",
            lambda e: (_call(e.geo.train, validation="held-out"), [e.st]),
            ValueError,
            "validation",
        ),
        C(
            "gears-train-refine_start",
            lambda e: (_call(e.geo.train, refine_start=1.0), [e.st]),
            ValueError,
            "refine_start",
        ),
        C("gears-train-n_min", lambda e: (_call(e.geo.train, n_min=5000, n_max=5000), [e.st]), ValueError, "n_min"),
        C(
            "gears-train-validation_slide",
            lambda e: (_call(e.geo.train, validation_slide="s9"), [e.st]),
            ValueError,
            "validation_slide",
        ),
        C(
            "gears-predict-wrong-width",
            lambda e: (_call(e.geo.predict_geometry, np.zeros((20, 5), dtype=np.float32)), []),
            ValueError,
            "embedding dimensions",
        ),
        # tl.reconstruct
        C(
            "reconstruct-not-a-model",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.tl.reconstruct, a, e.enc), [a]))(),
            TypeError,
            "GEARS",
        ),
        C(
            "reconstruct-ten-cells",
            lambda e: (lambda a=e.sc[:10].copy(): (_call(gx.tl.reconstruct, a, e.geo), [a]))(),
            ValueError,
            "at least 16 cells",
        ),
        C(
            "reconstruct-n_patch-too-large",
            lambda e: (lambda a=e.sc[:40].copy(): (_call(gx.tl.reconstruct, a, e.geo), [a]))(),
            ValueError,
            "pass n_patch=40",
        ),
        C(
            "reconstruct-min_overlap",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.tl.reconstruct, a, e.geo, n_patch=64, min_overlap=64), [a]))(),
            ValueError,
            "min_overlap",
        ),
        C(
            "reconstruct-smooth_k",
            lambda e: (
                lambda a=e.sc[:40].copy(): (
                    _call(gx.tl.reconstruct, a, e.geo, n_patch=40, min_overlap=6, smooth_k=40),
                    [a],
                )
            )(),
            ValueError,
            "smooth_k",
        ),
        C(
            "reconstruct-unadapted",
            lambda e: (
                lambda a=_with(e.sc, lambda a: a.uns.pop("gears_adapter")): (_call(gx.tl.reconstruct, a, e.geo), [a])
            )(),
            ValueError,
            "allow_unadapted",
        ),
        C(
            "reconstruct-wrong-width",
            lambda e: (
                lambda a=_with(e.sc, lambda a: a.obsm.__setitem__("X_gears", np.ones((a.n_obs, 3), dtype=np.float32))): (
                    _call(gx.tl.reconstruct, a, e.geo),
                    [a],
                )
            )(),
            ValueError,
            "embedding dimensions",
        ),
        C(
            "reconstruct-nan-embedding",
            lambda e: (
                lambda a=_with(e.sc, lambda a: a.obsm["X_gears"].__setitem__((0, 0), np.nan)): (
                    _call(gx.tl.reconstruct, a, e.geo),
                    [a],
                )
            )(),
            ValueError,
            "NaN",
        ),
        C(
            "reconstruct-missing-embedding",
            lambda e: (
                lambda a=_with(e.sc, lambda a: a.obsm.pop("X_gears")): (_call(gx.tl.reconstruct, a, e.geo), [a])
            )(),
            KeyError,
            "fit_adapter",
        ),
        C(
            "reconstruct-untrained",
            lambda e: (
                lambda a=e.sc.copy(): (
                    _call(gx.tl.reconstruct, a, gx.model.GEARS(e.st.copy(), slide_key="slide", dim=16, n_heads=2)),
                    [a],
                )
            )(),
            RuntimeError,
            "not trained",
        ),
        # model save / load
        C("save-existing-folder", lambda e: (_call(e.geo.save, e.saved["geo"]), []), FileExistsError, "overwrite=True"),
        C(
            "load-missing-folder",
            lambda e: (_call(gx.model.GEARS.load, e.saved["geo"].parent / "nowhere"), []),
            FileNotFoundError,
            "meta.json",
        ),
        C(
            "load-truncated-weights",
            lambda e: (
                lambda a=_fresh_st(e): (
                    _call(gx.model.GEARS.load, _save_broken(e, e.saved["geo"].parent, "geo_truncated"), a),
                    [a],
                )
            )(),
            ValueError,
            "model.pt",
        ),
        C(
            "load-broken-meta",
            lambda e: (_call(gx.model.GEARS.load, _save_broken(e, e.saved["geo"].parent, "geo_meta")), []),
            ValueError,
            "meta.json",
        ),
        C(
            "load-meta-not-an-object",
            lambda e: (_call(gx.model.GEARS.load, _save_broken(e, e.saved["geo"].parent, "geo_notjson_dict")), []),
            ValueError,
            "save the model again",
        ),
        C(
            "load-foreign-weights",
            lambda e: (
                lambda a=_fresh_st(e): (
                    _call(gx.model.GEARS.load, _save_broken(e, e.saved["geo"].parent, "geo_foreign"), a),
                    [a],
                )
            )(),
            ValueError,
            "no gearsx module weights",
        ),
        C(
            "load-encoder-wrong-genes",
            lambda e: (
                lambda a=_fresh_st(e)[:, :30].copy(): (_call(gx.model.SharedEncoder.load, e.saved["enc"], a), [a])
            )(),
            ValueError,
            "genes",
        ),
        C("load-wrong-class", lambda e: (_call(gx.model.GEARS.load, e.saved["enc"]), []), ValueError, "SharedEncoder"),
        C(
            "load-encoder-without-data",
            lambda e: (_call(gx.model.SharedEncoder.load, e.saved["enc"]), []),
            ValueError,
            "adata=",
        ),
        # tl.cluster_domains / spatial_smooth / stitch
        C(
            "domains-method",
            lambda e: (lambda a=e.st.copy(): (_call(gx.tl.cluster_domains, a, method="dbscan"), [a]))(),
            ValueError,
            "method",
        ),
        C(
            "domains-scan-needs-k",
            lambda e: (lambda a=e.st.copy(): (_call(gx.tl.cluster_domains, a, method="scan"), [a]))(),
            ValueError,
            "n_clusters",
        ),
        C(
            "domains-missing-rep",
            lambda e: (lambda a=e.st.copy(): (_call(gx.tl.cluster_domains, a, use_rep="X_pca"), [a]))(),
            KeyError,
            "sc.pp.pca",
        ),
        C(
            "domains-refine-missing-spatial",
            lambda e: (
                lambda a=_with(e.st, lambda a: a.obsm.pop("spatial")): (
                    _call(gx.tl.cluster_domains, a, refine=True),
                    [a],
                )
            )(),
            KeyError,
            "spatial",
        ),
        C(
            "domains-refine-nan-slide",
            lambda e: (
                lambda a=_with(e.st, _nan_slide): (_call(gx.tl.cluster_domains, a, refine=True, n_clusters=3), [a])
            )(),
            ValueError,
            "missing values",
        ),
        C(
            "domains-refine-recorded-slide-dropped",
            lambda e: (
                lambda a=_with(e.st, lambda a: a.obs.pop("slide")): (
                    _call(gx.tl.cluster_domains, a, refine=True, n_clusters=3),
                    [a],
                )
            )(),
            KeyError,
            "slide_key",
        ),
        C(
            "domains-too-many-clusters",
            lambda e: (lambda a=e.st[:5].copy(): (_call(gx.tl.cluster_domains, a, n_clusters=6), [a]))(),
            ValueError,
            "n_clusters",
        ),
        C(
            "smooth-missing-spatial",
            lambda e: (lambda a=_with(e.st, lambda a: a.obsm.pop("spatial")): (_call(gx.tl.spatial_smooth, a), [a]))(),
            KeyError,
            "spatial",
        ),
        C(
            "smooth-too-many-neighbours",
            lambda e: (
                lambda a=e.st[:5].copy(): (_call(gx.tl.spatial_smooth, a, n_neighbors=10, slide_key="slide"), [a])
            )(),
            ValueError,
            "n_neighbors",
        ),
        C(
            "stitch-coincident-patch",
            lambda e: (
                lambda a=ad.AnnData(np.zeros((30, 1), dtype=np.float32)): (
                    _call(gx.tl.stitch, a, [(np.arange(30), np.zeros((30, 2)))]),
                    [a],
                )
            )(),
            ValueError,
            "one point",
        ),
        C(
            "stitch-no-patches",
            lambda e: (lambda a=ad.AnnData(np.zeros((30, 1), dtype=np.float32)): (_call(gx.tl.stitch, a, []), [a]))(),
            ValueError,
            "non-empty",
        ),
        C(
            "stitch-uncovered-cells",
            lambda e: (
                lambda a=ad.AnnData(np.zeros((30, 1), dtype=np.float32)): (
                    _call(gx.tl.stitch, a, [(np.arange(20), np.random.default_rng(0).normal(size=(20, 2)))]),
                    [a],
                )
            )(),
            ValueError,
            "in no patch",
        ),
        # metrics
        C(
            "metrics-length-mismatch",
            lambda e: (_call(gx.metrics.evaluate_geometry, np.zeros((30, 2)), np.ones((31, 2))), []),
            ValueError,
            "same cells",
        ),
        C(
            "metrics-nan",
            lambda e: (_call(gx.metrics.evaluate_geometry, np.full((30, 2), np.nan), np.ones((30, 2))), []),
            ValueError,
            "NaN",
        ),
        C(
            "metrics-k-too-large",
            lambda e: (_call(gx.metrics.evaluate_geometry, np.eye(10, 2), np.eye(10, 2)), []),
            ValueError,
            "Lower `k`",
        ),
        C(
            "metrics-adata-missing-key",
            lambda e: (
                lambda a=e.sc.copy(): (_call(gx.metrics.evaluate_adata, a, "X_gears_spatial", "spatial_gt"), [a])
            )(),
            KeyError,
            "X_gears_spatial",
        ),
        # pl
        C(
            "pl-reconstruction-missing-basis",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.pl.reconstruction, a, show=False), [a]))(),
            KeyError,
            "reconstruct",
        ),
        C(
            "pl-domains-missing-key",
            lambda e: (lambda a=e.st.copy(): (_call(gx.pl.domains, a, show=False), [a]))(),
            KeyError,
            "gears_domain",
        ),
        C(
            "pl-distortion-missing-truth",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.pl.distortion_heatmap, a, show=False), [a]))(),
            KeyError,
            "X_gears_spatial",
        ),
        C(
            "pl-stitching-missing",
            lambda e: (lambda a=e.sc.copy(): (_call(gx.pl.stitching_diagnostics, a, show=False), [a]))(),
            KeyError,
            "gears",
        ),
    ]


def _visium(e: Env, scalef) -> ad.AnnData:
    a = e.st[:50].copy()
    factors = {} if scalef is None else {"tissue_hires_scalef": scalef}
    a.uns["spatial"] = {"lib": {"images": {"hires": np.zeros((64, 64, 3), dtype=np.uint8)}, "scalefactors": factors}}
    return a


CASES = _cases()


def test_catalogue_is_large():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, env: Env):
    call, watched = case.make(env)
    before = [snapshot(w) for w in watched]
    with pytest.raises(case.exc, match=case.match.replace("(", r"\(").replace(")", r"\)").replace("=", "=")):
        call()
    after = [snapshot(w) for w in watched]
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        assert b == a, f"the failed call modified its input #{i}"
