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
    enc = gx.tl.fit_encoder(st, slide_key="slide", max_epochs=2, n_latent=8, n_hidden=(32,), progress=False)
    gx.tl.fit_adapter(sc, enc, max_epochs=1, progress=False)
    geo = gx.model.GEARS(st, slide_key="slide", n_out=4, dim=16, n_heads=2, n_inducing=8)
    geo.train(max_epochs=1, n_batches=2, n_min=64, n_max=96, progress=False)
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
            tuple(sorted(obj.layers, key=str)),  # anndata 0.13 lists X among the layers, as the key None
            tuple(_checksum(obj.layers[k]) for k in sorted(obj.layers, key=str)),
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
    s = a.obs["slide"].astype(object).to_numpy(copy=True)
    s[:3] = np.nan
    a.obs["slide"] = pd.Categorical(s)


def _one_point_slide(a):
    """Every spot of the first slide at one position (a placeholder for positions never read)."""
    xy = np.array(a.obsm["spatial"], dtype=float)
    first = (a.obs["slide"] == a.obs["slide"].iloc[0]).to_numpy()
    xy[first] = xy[first][0]
    a.obsm["spatial"] = xy


def _layout_then_one_point_slide(a):
    """A "reconstruction" (the true positions), then the first slide's true positions at one point."""
    a.obsm["pred"] = np.array(a.obsm["spatial"], dtype=float)
    _one_point_slide(a)


def _two_sections(n_a: int, n_b: int) -> ad.AnnData:
    """Cells of two sections, 'a' and 'b', with true positions and a slightly noisy layout ("pred")."""
    rng = np.random.default_rng(0)
    a = ad.AnnData(np.zeros((n_a + n_b, 1), dtype=np.float32))
    a.obs["section"] = pd.Categorical(["a"] * n_a + ["b"] * n_b)
    a.obsm["spatial_gt"] = rng.uniform(size=(a.n_obs, 2))
    a.obsm["pred"] = a.obsm["spatial_gt"] + 0.01 * rng.normal(size=(a.n_obs, 2))
    return a


def _nan_x(a):
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.array(a.X, dtype=np.float32)
    x[0, 0] = np.nan
    a.X = x


def _tiny_validation_region(e: Env):
    """A row: GEARS on a reference whose second slide keeps 20 spots (a 4-spot validation band, asked for)."""
    a = _fresh_st(e)
    second = (a.obs["slide"] == a.obs["slide"].cat.categories[1]).to_numpy()
    a = a[~second | (np.cumsum(second) <= 20)].copy()
    geo = gx.model.GEARS(a, slide_key="slide", n_out=4, dim=16, n_heads=2, n_inducing=8)
    return (lambda: geo.train(max_epochs=1, n_batches=1, n_min=16, n_max=32, validation="region", progress=False)), [a]


def _fake_layout(*, nan_row: bool = False):
    """An edit giving the cells a "reconstruction" (their true positions), with a NaN row if asked."""

    def edit(a):
        xy = np.array(a.obsm["spatial_gt"], dtype=float)
        if nan_row:
            xy[0, 0] = np.nan
        a.obsm["X_gears_spatial"] = xy

    return edit


def _fresh_st(e: Env) -> ad.AnnData:
    """A copy of the prepared ST data, not registered anywhere (fresh uns without registry ids)."""
    a = e.st.copy()
    for k in [k for k in a.uns if k.startswith("_scvi")]:
        del a.uns[k]
    a.obs = a.obs[[c for c in a.obs.columns if not c.startswith("_scvi")]].copy()
    return a


def _with_nan_row(x: np.ndarray) -> np.ndarray:
    """``x`` as float with its first row NaN."""
    x = np.array(x, dtype=float)
    x[0] = np.nan
    return x


def _ring(n: int):
    """A ring graph of ``n`` nodes (each linked to the next), as a sparse adjacency."""
    nxt = np.roll(np.arange(n), -1)
    a = sp.csr_matrix((np.ones(n), (np.arange(n), nxt)), shape=(n, n))
    return (a + a.T).tocsr()


def _one_patch(indices: np.ndarray, **options):
    """A row: ``gx.tl.stitch`` on 30 cells given one patch, ``indices`` with random coordinates (and ``options``)."""
    coords = np.random.default_rng(0).normal(size=(len(indices), 2))
    return on(
        lambda e: ad.AnnData(np.zeros((30, 1), dtype=np.float32)),
        lambda e, a: gx.tl.stitch(a, [(indices, coords)], **options),
    )


def on(build: Callable[[Env], ad.AnnData], call: Callable[[Env, ad.AnnData], object]):
    """A row whose call gets a fresh AnnData built from the environment; that AnnData is watched."""

    def make(e: Env):
        a = build(e)
        return (lambda: call(e, a)), [a]

    return make


def plain(call: Callable[[Env], object], watch: Callable[[Env], list] | None = None):
    """A row whose call needs nothing fresh; ``watch`` names shared objects that must stay unchanged."""

    def make(e: Env):
        return (lambda: call(e)), ([] if watch is None else watch(e))

    return make


def _cluster_key_added(key):
    """A row: k-means domains of a copy of the prepared spots, written under ``key_added=key``."""
    return on(
        lambda e: e.st.copy(),
        lambda e, a: gx.tl.cluster_domains(a, method="kmeans", n_clusters=3, use_rep="X_gears", key_added=key),
    )


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
            plain(lambda e: gx.pp.shared_genes(e.raw_st), watch=lambda e: [e.raw_st]),
            ValueError,
            "at least two",
        ),
        C(
            "shared_genes-duplicated-names",
            on(
                lambda e: _with(e.raw_sc, lambda a: setattr(a, "var_names", ["g"] * a.n_vars)),
                lambda e, a: gx.pp.shared_genes(e.raw_st, a),
            ),
            ValueError,
            "var_names_make_unique",
        ),
        C(
            "shared_genes-min_shared-0",  # with no gene shared, gene-less copies came back
            on(
                lambda e: _with(e.raw_sc, lambda a: setattr(a, "var_names", [f"x{i}" for i in range(a.n_vars)])),
                lambda e, a: gx.pp.shared_genes(e.raw_st, a, min_shared=0),
            ),
            ValueError,
            "`min_shared` must be an integer >= 1",
        ),
        C(
            "shared_genes-not-anndata",  # AttributeError: 'numpy.ndarray' object has no attribute 'var_names'
            plain(lambda e: gx.pp.shared_genes(e.raw_st, np.eye(3))),
            TypeError,
            "Data set 1 of `shared_genes` is a ndarray, not an AnnData",
        ),
        C(
            "shared_genes-none-shared",
            on(
                lambda e: _with(e.raw_sc, lambda a: setattr(a, "var_names", [f"x{i}" for i in range(a.n_vars)])),
                lambda e, a: gx.pp.shared_genes(e.raw_st, a),
            ),
            ValueError,
            "same gene identifiers",
        ),
        C(
            "prepare-n_top_genes-0",
            plain(
                lambda e: gx.pp.prepare(e.raw_st, e.raw_sc, slide_key="slide", n_top_genes=0),
                watch=lambda e: [e.raw_st, e.raw_sc],
            ),
            ValueError,
            "n_top_genes",
        ),
        C(
            "prepare-n_top_genes-negative",
            plain(
                lambda e: gx.pp.prepare(e.raw_st, e.raw_sc, slide_key="slide", n_top_genes=-5),
                watch=lambda e: [e.raw_st, e.raw_sc],
            ),
            ValueError,
            "n_top_genes",
        ),
        C(
            "prepare-nan-slide",
            on(lambda e: _with(e.raw_st, _nan_slide), lambda e, a: gx.pp.prepare(a, e.raw_sc, slide_key="slide")),
            ValueError,
            "missing values",
        ),
        C(
            "prepare-unknown-slide-key",
            plain(lambda e: gx.pp.prepare(e.raw_st, e.raw_sc, slide_key="batch"), watch=lambda e: [e.raw_st]),
            KeyError,
            "slide_key",
        ),
        C(
            "prepare-negative-counts",
            on(
                lambda e: _with(e.raw_sc, lambda a: setattr(a, "X", a.X.toarray() - 1.0)),
                lambda e, a: gx.pp.prepare(e.raw_st, a, slide_key="slide"),
            ),
            ValueError,
            "negative values",
        ),
        C(
            "prepare-absurd-counts",
            on(
                lambda e: _with(e.raw_sc, lambda a: setattr(a, "X", a.X.toarray() * 1e12)),
                lambda e, a: gx.pp.prepare(e.raw_st, a, slide_key="slide"),
            ),
            ValueError,
            "beyond any count",
        ),
        C(
            "prepare-nan-expression",
            on(
                lambda e: _with(
                    e.raw_sc, lambda a: setattr(a, "X", np.where(np.arange(a.n_vars) == 0, np.nan, a.X.toarray()))
                ),
                lambda e, a: gx.pp.prepare(e.raw_st, a, slide_key="slide"),
            ),
            ValueError,
            "NaN",
        ),
        C(
            "prepare-missing-layer",
            plain(
                lambda e: gx.pp.prepare(e.raw_st, e.raw_sc, slide_key="slide", layer="raw"),
                watch=lambda e: [e.raw_st, e.raw_sc],
            ),
            KeyError,
            "layer",
        ),
        C(
            "prepare-sc-without-counts",
            on(
                lambda e: _with(e.raw_sc, lambda a: setattr(a, "X", a.X * 0)),
                lambda e, a: gx.pp.prepare(e.raw_st, a, slide_key="slide"),
            ),
            ValueError,
            "has no counts in the",
        ),
        C(
            "hvg-unknown-batch-key",
            on(lambda e: e.st.copy(), lambda e, a: gx.pp.highly_variable_genes(a, batch_key="nope")),
            KeyError,
            "batch_key",
        ),
        C(
            "hvg-counts-log-flavour",
            on(lambda e: e.raw_st.copy(), lambda e, a: gx.pp.highly_variable_genes(a, batch_key="slide")),
            ValueError,
            "integer counts",
        ),
        C(
            "hvg-sparse-array",
            on(
                lambda e: _with(e.st, lambda a: setattr(a, "X", sp.csr_array(a.X))),
                lambda e, a: gx.pp.highly_variable_genes(a, batch_key="slide"),
            ),
            TypeError,
            "sparse array, which scanpy",
        ),
        C(
            "hvg-half-precision-layer",
            on(
                lambda e: _with(e.st, lambda a: a.layers.__setitem__("half", a.X.toarray().astype(np.float16))),
                lambda e, a: gx.pp.highly_variable_genes(a, batch_key="slide", layer="half"),
            ),
            TypeError,
            "float16, on which",
        ),
        # pp.mean_center_per_slide
        C(
            "center-nan-slide",
            on(lambda e: _with(e.st, _nan_slide), lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide")),
            ValueError,
            "missing values",
        ),
        C(
            "center-beyond-float32",
            on(
                lambda e: _with(e.st, lambda a: setattr(a, "X", np.full(a.shape, 1e300))),
                lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide"),
            ),
            ValueError,
            "float32",
        ),
        C(
            "center-counts",  # raw counts centred per slide: offsets that are no capture efficiency
            on(lambda e: e.raw_st.copy(), lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide")),
            ValueError,
            "integer counts",
        ),
        C(
            "center-counts-layer",
            on(lambda e: e.st.copy(), lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide", layer="counts")),
            ValueError,
            r"layers\['counts'\]",
        ),
        C(
            "center-missing-layer",
            on(lambda e: e.st.copy(), lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide", layer="nope")),
            KeyError,
            "layer",
        ),
        C(
            "center-unknown-slide-key",
            on(lambda e: e.st.copy(), lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="nope")),
            KeyError,
            "slide_key",
        ),
        C(
            "center-one-observation-slide",  # that observation was set to the overall mean: erased
            on(
                lambda e: _with(e.st, _set_obs("sample", lambda a: ["lone"] + ["rest"] * (a.n_obs - 1))),
                lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="sample"),
            ),
            ValueError,
            "hold a single observation",
        ),
        C(
            "center-key_added-counts",  # overwrote the raw counts with centred values
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide", key_added="counts"),
            ),
            ValueError,
            "would overwrite the raw counts",
        ),
        # pp.extract_patches
        C(
            "patches-negative-scalef",
            on(lambda e: _visium(e, scalef=-0.1), lambda e, a: gx.pp.extract_patches(a, size=8)),
            ValueError,
            "positive number",
        ),
        C(
            "patches-zero-scalef",
            on(lambda e: _visium(e, scalef=0.0), lambda e, a: gx.pp.extract_patches(a, size=8)),
            ValueError,
            "positive number",
        ),
        C(
            "patches-missing-scalef",
            on(lambda e: _visium(e, scalef=None), lambda e, a: gx.pp.extract_patches(a, size=8)),
            KeyError,
            "tissue_hires_scalef",
        ),
        C(
            "patches-missing-spatial",
            on(
                lambda e: _with(_visium(e, 0.1), lambda a: a.obsm.pop("spatial")),
                lambda e, a: gx.pp.extract_patches(a, size=8),
            ),
            KeyError,
            "spatial",
        ),
        C(
            "patches-bad-resolution",
            on(lambda e: _visium(e, 0.1), lambda e, a: gx.pp.extract_patches(a, resolution="medium")),
            ValueError,
            "resolution",
        ),
        C(
            "patches-fullres-without-image",
            on(lambda e: _visium(e, 0.1), lambda e, a: gx.pp.extract_patches(a, resolution="fullres")),
            ValueError,
            "image=",
        ),
        # model.SharedEncoder / tl.fit_encoder
        C(
            "encoder-setup-nan-slide",
            on(
                lambda e: _with(_fresh_st(e), _nan_slide),
                lambda e, a: gx.model.SharedEncoder.setup_anndata(a, slide_key="slide"),
            ),
            ValueError,
            "missing values",
        ),
        C(
            "encoder-setup-missing-spatial",
            on(
                lambda e: _with(_fresh_st(e), lambda a: a.obsm.pop("spatial")),
                lambda e, a: gx.model.SharedEncoder.setup_anndata(a, slide_key="slide"),
            ),
            KeyError,
            "spatial",
        ),
        C(
            "encoder-setup-nan-coords",
            on(
                lambda e: _with(_fresh_st(e), lambda a: a.obsm["spatial"].__setitem__((0, 0), np.nan)),
                lambda e, a: gx.model.SharedEncoder.setup_anndata(a, slide_key="slide"),
            ),
            ValueError,
            "NaN",
        ),
        C(
            "encoder-setup-one-position-slide",  # trained on positives set by row order, without a word
            on(
                lambda e: _with(_fresh_st(e), _one_point_slide),
                lambda e, a: gx.model.SharedEncoder.setup_anndata(a, slide_key="slide"),
            ),
            ValueError,
            "spots of slide 'slide_0' (`obs",
        ),
        C(
            "fit_encoder-nan-slide",
            on(lambda e: _with(_fresh_st(e), _nan_slide), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide")),
            ValueError,
            "missing values",
        ),
        C(
            "fit_encoder-n_latent-0",
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", n_latent=0)),
            ValueError,
            "n_latent",
        ),
        C(
            "fit_encoder-empty-hidden",
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", n_hidden=())),
            ValueError,
            "n_hidden",
        ),
        C(
            "fit_encoder-n_spatial_neighbors-too-large",
            on(
                lambda e: _fresh_st(e),
                lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", n_spatial_neighbors=100_000, max_epochs=1),
            ),
            ValueError,
            "n_spatial_neighbors",
        ),
        C(
            "fit_encoder-missing-layer",
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", layer="nope")),
            KeyError,
            "layer",
        ),
        C(
            "fit_encoder-temperature-0",
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", temperature=0)),
            ValueError,
            "`temperature` must be a positive number",
        ),
        C(
            "fit_encoder-lr-0",
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", lr=0.0)),
            ValueError,
            "`lr` must be a positive number",
        ),
        C(
            "fit_encoder-counts-layer",  # trained on raw counts without a word
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", layer="counts")),
            ValueError,
            r"`layers\['counts'\]` holds integer counts",
        ),
        C(
            "fit_encoder-negative-w_nce",
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", w_nce=-1.0)),
            ValueError,
            "`w_nce` must be a finite number >= 0",
        ),
        C(
            "encoder-on-a-copy",
            on(lambda e: e.st[:500].copy(), lambda e, a: gx.model.SharedEncoder(a)),
            ValueError,
            "copy or subset",
        ),
        # tl.fit_adapter
        C(
            "fit_adapter-given-gears",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.fit_adapter(a, e.geo)),
            TypeError,
            "SharedEncoder",
        ),
        C(
            "fit_adapter-three-cells",
            on(lambda e: e.sc[:3].copy(), lambda e, a: gx.tl.fit_adapter(a, e.enc)),
            ValueError,
            "at least 10",
        ),
        C(
            "fit_adapter-unknown-mode",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.fit_adapter(a, e.enc, mode="mlp")),
            NotImplementedError,
            "linear",
        ),
        C(
            "fit_adapter-other-genes",
            on(lambda e: e.sc[:, :30].copy(), lambda e, a: gx.tl.fit_adapter(a, e.enc)),
            ValueError,
            "genes",
        ),
        C(
            "fit_adapter-all-weights-0",  # fine-tuned nothing, without a word
            on(
                lambda e: e.sc.copy(),
                lambda e, a: gx.tl.fit_adapter(a, e.enc, w_coral=0, w_mmd=0, w_identity=0),
            ),
            ValueError,
            "are all 0",
        ),
        C(
            "fit_adapter-st-is-sc",  # aligned the cells onto themselves
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.fit_adapter(a, e.enc, adata_st=a)),
            ValueError,
            "`adata_st` is `adata_sc` itself",
        ),
        C(
            "fit_adapter-batch_size",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.fit_adapter(a, e.enc, batch_size=2)),
            ValueError,
            "batch_size",
        ),
        C(
            "fit_adapter-negative-w_coral",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.fit_adapter(a, e.enc, w_coral=-1.0)),
            ValueError,
            "`w_coral` must be a finite number >= 0",
        ),
        C(
            "fit_adapter-support_tol-1",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.fit_adapter(a, e.enc, support_tol=1.0)),
            ValueError,
            "1 would drop every direction",
        ),
        # model.GEARS construction and training
        C(
            "gears-coincident-coordinates",
            on(
                lambda e: _with(_fresh_st(e), lambda a: a.obsm.__setitem__("spatial", np.zeros((a.n_obs, 2)))),
                lambda e, a: gx.model.GEARS(a, slide_key="slide"),
            ),
            ValueError,
            "at 1 distinct position(s)",
        ),
        C(
            "gears-nan-slide",
            on(lambda e: _with(_fresh_st(e), _nan_slide), lambda e, a: gx.model.GEARS(a, slide_key="slide")),
            ValueError,
            "missing values",
        ),
        C(
            "gears-embedding-is-coordinates",  # trained on the very coordinates it learns to predict
            on(lambda e: _fresh_st(e), lambda e, a: gx.model.GEARS(a, use_rep="spatial", slide_key="slide")),
            ValueError,
            "is `spatial_key`: the model would read the coordinates",
        ),
        C(
            "gears-missing-embedding",
            on(lambda e: _with(_fresh_st(e), lambda a: a.obsm.pop("X_gears")), lambda e, a: gx.model.GEARS(a)),
            KeyError,
            "fit_encoder",
        ),
        C(
            "gears-dim-heads",
            on(lambda e: _fresh_st(e), lambda e, a: gx.model.GEARS(a, slide_key="slide", dim=30, n_heads=4)),
            ValueError,
            "divisible",
        ),
        C(
            "gears-structure",
            on(lambda e: _fresh_st(e), lambda e, a: gx.model.GEARS(a, slide_key="slide", structure="alphafold")),
            ValueError,
            "structure",
        ),
        C(
            "gears-targets",
            on(lambda e: _fresh_st(e), lambda e, a: gx.model.GEARS(a, slide_key="slide", targets="oracle")),
            ValueError,
            "targets",
        ),
        C(
            "gears-n_out-1",
            on(lambda e: _fresh_st(e), lambda e, a: gx.model.GEARS(a, slide_key="slide", n_out=1)),
            ValueError,
            "n_out",
        ),
        C(
            "gears-3d-coordinates",
            on(
                lambda e: _with(_fresh_st(e), lambda a: a.obsm.__setitem__("spatial", np.ones((a.n_obs, 3)))),
                lambda e, a: gx.model.GEARS(a),
            ),
            ValueError,
            "(n_obs, 2)",
        ),
        C(
            "gears-train-validation",
            plain(lambda e: e.geo.train(validation="held-out"), watch=lambda e: [e.st]),
            ValueError,
            "validation",
        ),
        C(
            "gears-train-refine_start",
            plain(lambda e: e.geo.train(refine_start=1.0), watch=lambda e: [e.st]),
            ValueError,
            "refine_start",
        ),
        C(
            "gears-train-lr-0",
            plain(lambda e: e.geo.train(lr=0.0), watch=lambda e: [e.st]),
            ValueError,
            "`lr` must be a positive number",
        ),
        C(
            "gears-train-loss_weights-misspelt",  # trained with the default weights, without a word
            plain(lambda e: e.geo.train(loss_weights={"gen_gramm": 2.0}), watch=lambda e: [e.st]),
            ValueError,
            "key 'gen_gramm' would change nothing: no such term",
        ),
        C(
            "gears-train-loss_weights-other-part",  # a refiner's term for a model without one: ignored
            plain(lambda e: e.geo.train(loss_weights={"nca": 1.0}), watch=lambda e: [e.st]),
            ValueError,
            "trains the structure='refiner' part",
        ),
        C(
            "gears-train-loss_weights-negative",  # rewarded the error it should penalise
            plain(lambda e: e.geo.train(loss_weights={"gen_scale": -0.1}), watch=lambda e: [e.st]),
            ValueError,
            r"`loss_weights\['gen_scale'\]` must be a finite number >= 0",
        ),
        C(
            "gears-train-n_min",
            plain(lambda e: e.geo.train(n_min=5000, n_max=5000), watch=lambda e: [e.st]),
            ValueError,
            "n_min",
        ),
        C(
            "gears-train-validation_slide",
            plain(lambda e: e.geo.train(validation_slide="s9"), watch=lambda e: [e.st]),
            ValueError,
            "validation_slide",
        ),
        C("gears-train-tiny-validation-region", _tiny_validation_region, ValueError, "validation spots"),
        C(
            "gears-predict-wrong-width",
            plain(lambda e: e.geo.predict_geometry(np.zeros((20, 5), dtype=np.float32))),
            ValueError,
            "embedding dimensions",
        ),
        C(
            "gears-predict-mask-indices",  # was cast to positions 0 and 1: a set of two spots, repeated
            plain(lambda e: e.geo.predict_geometry(e.st, np.arange(e.st.n_obs) < 40), watch=lambda e: [e.st]),
            TypeError,
            "flatnonzero",
        ),
        C(
            "gears-predict-empty-indices",  # an empty array was read as no sets at all: [] returned
            plain(lambda e: e.geo.predict_geometry(e.st, np.array([], dtype=int)), watch=lambda e: [e.st]),
            ValueError,
            "at least 3 observations",
        ),
        C(
            "gears-predict-repeated-indices",
            plain(lambda e: e.geo.predict_geometry(e.st, np.r_[np.arange(40), 3]), watch=lambda e: [e.st]),
            ValueError,
            "repeats an index",
        ),
        C(
            "encoder-latent-float-indices",  # truncated towards zero by numpy
            plain(lambda e: e.enc.get_latent_representation(e.st, indices=np.arange(10) + 0.5), watch=lambda e: [e.st]),
            TypeError,
            "integer positions",
        ),
        C(
            "encoder-latent-negative-indices",  # counted from the end by numpy
            plain(lambda e: e.enc.get_latent_representation(e.st, indices=np.array([-1])), watch=lambda e: [e.st]),
            IndexError,
            "outside",
        ),
        C(
            "encoder-latent-batch_size-0",  # was the default batch without a word
            plain(lambda e: e.enc.get_latent_representation(e.st, batch_size=0), watch=lambda e: [e.st]),
            ValueError,
            "batch_size",
        ),
        C(
            "gears-predict-negative-refine_steps",
            plain(lambda e: e.geo.predict_geometry(e.st, np.arange(40), refine_steps=-1), watch=lambda e: [e.st]),
            ValueError,
            "`refine_steps` must be an integer >= 0",
        ),
        C(
            "gears-predict-negative-sigma_start",
            plain(lambda e: e.geo.predict_geometry(e.st, np.arange(40), sigma_start=-1.0), watch=lambda e: [e.st]),
            ValueError,
            "`sigma_start` must be a positive number",
        ),
        C(
            "gears-predict-n_components-zero",
            plain(lambda e: e.geo.predict_geometry(e.st, np.arange(40), n_components=0), watch=lambda e: [e.st]),
            ValueError,
            "`n_components` must be an integer >= 1",
        ),
        C(
            "gears-predict-n_components-above-n_out",
            plain(lambda e: e.geo.predict_geometry(e.st, np.arange(40), n_components=5), watch=lambda e: [e.st]),
            ValueError,
            "pass n_components <= n_out",
        ),
        C(
            "gears-predict-patches-fractional-refine_steps",
            plain(lambda e: e.geo.predict_patches(e.st, [np.arange(40)], refine_steps=2.5), watch=lambda e: [e.st]),
            ValueError,
            "`refine_steps` must be an integer >= 0",
        ),
        # tl.reconstruct
        C(
            "reconstruct-not-a-model",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.enc)),
            TypeError,
            "GEARS",
        ),
        C(
            "reconstruct-ten-cells",
            on(lambda e: e.sc[:10].copy(), lambda e, a: gx.tl.reconstruct(a, e.geo)),
            ValueError,
            "at least 16 cells",
        ),
        C(
            "reconstruct-n_patch-too-large",
            on(lambda e: e.sc[:40].copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, n_patch=64)),
            ValueError,
            "larger than the data (40 cells); pass n_patch=None",
        ),
        C(
            "reconstruct-min_overlap",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, n_patch=64, min_overlap=64)),
            ValueError,
            "min_overlap",
        ),
        C(
            "reconstruct-smooth_k",
            on(
                lambda e: e.sc[:40].copy(),
                lambda e, a: gx.tl.reconstruct(a, e.geo, n_patch=40, min_overlap=6, smooth_k=40),
            ),
            ValueError,
            "smooth_k",
        ),
        C(
            "reconstruct-negative-refine_steps",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, refine_steps=-1)),
            ValueError,
            "`refine_steps` must be an integer >= 0",
        ),
        C(
            "reconstruct-transport-embedding-only",  # the plan reads the expression that weight 0 leaves out
            on(
                lambda e: e.sc.copy(),
                lambda e, a: gx.tl.reconstruct(a, e.geo, anchor_transport=True, anchor_expression_weight=0),
            ),
            ValueError,
            "anchor_expression_weight=0 matches on the embedding alone; drop one",
        ),
        C(
            "reconstruct-transport-intrinsic",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, anchor=None, anchor_transport=True)),
            ValueError,
            "reads none of \\['anchor_transport'\\]",
        ),
        C(
            "reconstruct-jaccard-one",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, jaccard=1.0)),
            ValueError,
            "prunes every edge",
        ),
        C(
            "reconstruct-constant-embedding",  # failed in the stitch, on `patch_coords[0]`
            on(
                lambda e: _with(e.sc, lambda a: a.obsm.__setitem__("X_gears", np.ones_like(a.obsm["X_gears"]))),
                lambda e, a: gx.tl.reconstruct(a, e.geo),
            ),
            ValueError,
            "holds the same row for every cell",
        ),
        C(
            "reconstruct-duplicated-var_names",  # pandas' InvalidIndexError, naming nothing
            on(
                lambda e: _with(e.sc, lambda a: setattr(a, "var_names", [a.var_names[0], *a.var_names[:-1]])),
                lambda e, a: gx.tl.reconstruct(a, e.geo, anchor="reference"),
            ),
            ValueError,
            "duplicated var_names; run `adata.var_names_make_unique()`",
        ),
        C(
            "reconstruct-jaccard-nan",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, jaccard=float("nan"))),
            ValueError,
            "`jaccard` must be a number in",
        ),
        C(
            "locality_graph-jaccard-above-one",
            plain(lambda e: gx.geometry.locality_graph(np.asarray(e.sc.obsm["X_gears"])[:300], k=10, jaccard=1.5)),
            ValueError,
            "`jaccard` must be a number in",
        ),
        C(
            "walk-patches-restart-one",  # every walker jumped back into its patch forever: the call never returned
            plain(lambda e: gx.geometry.random_walk_patches(_ring(60), 20, restart=1.0)),
            ValueError,
            "`restart` must be below 1",
        ),
        C(
            "walk-patches-max_patches-0",  # `max_patches or default`: 0 meant the default limit
            plain(lambda e: gx.geometry.random_walk_patches(_ring(60), 20, max_patches=0)),
            ValueError,
            "max_patches",
        ),
        C(
            "spatial_edges-groups-length",  # the first 10 points were grouped, the others ignored
            plain(
                lambda e: gx.geometry.spatial_edges(np.random.default_rng(0).uniform(size=(60, 2)), groups=np.zeros(10))
            ),
            ValueError,
            "one group (slide) per point",
        ),
        C(
            "MinisetSampler-pool_factor-below-1",  # every draw failed later, naming no argument
            plain(
                lambda e: gx.geometry.MinisetSampler(
                    np.random.default_rng(0).uniform(size=(200, 2)), n_min=8, n_max=20, pool_factor=0.5
                )
            ),
            ValueError,
            "`pool_factor` must be >= 1",
        ),
        C(
            "MinisetSampler-n_overlap_min-0",  # with a small overlap, pairs shared no spot
            plain(
                lambda e: gx.geometry.MinisetSampler(
                    np.random.default_rng(0).uniform(size=(200, 2)), n_min=8, n_max=20, overlap=0.01, n_overlap_min=0
                )
            ),
            ValueError,
            "`n_overlap_min` must be an integer >= 1",
        ),
        C(
            "expected_distance-negative-variance",  # read as no scatter
            plain(lambda e: gx.geometry.expected_distance(np.ones(3), np.array([1.0, -1.0, 0.0]))),
            ValueError,
            "non-negative",
        ),
        C(
            "expected_distance-shapes",  # numpy's broadcasting error, naming neither argument
            plain(lambda e: gx.geometry.expected_distance(np.ones(3), np.ones(2))),
            ValueError,
            "`variance` (shape (2,)) must broadcast with `mean_distance`",
        ),
        C(
            "gauge_fix-nan",  # returned all-NaN coordinates
            plain(lambda e: gx.geometry.gauge_fix(_with_nan_row(np.eye(20, 2)))),
            ValueError,
            "`x` contains NaN or inf in 1 of 20 rows",
        ),
        C(
            "procrustes-nan",  # numpy's "SVD did not converge"
            plain(lambda e: gx.geometry.procrustes(_with_nan_row(np.eye(20, 2)), np.eye(20, 2))),
            ValueError,
            "`source` contains NaN or inf",
        ),
        C(
            "neighbor_average-nan",  # scikit-learn's "Input X contains NaN"
            plain(lambda e: gx.geometry.neighbor_average(_with_nan_row(np.eye(20, 2)), 5)),
            ValueError,
            "`x` contains NaN or inf in 1 of 20 rows",
        ),
        C(
            "match_score-one-dimensional",  # numpy's "axis 1 is out of bounds"
            plain(lambda e: gx.geometry.match_score(np.ones(5), np.ones((5, 2)), np.ones((5, 2)))),
            ValueError,
            "`query_similarity` must be a 2-D array",
        ),
        C(
            "match_reference-nan-query",  # scikit-learn's "Input X contains NaN"
            plain(lambda e: gx.geometry.match_reference(_with_nan_row(np.eye(20, 3)), np.eye(20, 3), np.eye(20, 2))),
            ValueError,
            "`query` holds NaN or inf in 1 of 20 rows",
        ),
        C(
            "match_reference-nan-expression",  # scikit-learn's "Input X contains NaN"
            plain(
                lambda e: gx.geometry.match_reference(
                    np.eye(20, 3),
                    np.eye(20, 3),
                    np.eye(20, 2),
                    query_expression=_with_nan_row(np.eye(20, 4)),
                    reference_expression=np.eye(20, 4),
                )
            ),
            ValueError,
            "`query_expression` holds NaN or inf in 1 of 20 rows",
        ),
        C(
            "knn_indices-nan",  # scipy's "data must be finite"
            plain(lambda e: gx.geometry.knn_indices(_with_nan_row(np.eye(20, 2)), 3)),
            ValueError,
            "`coords` contains NaN or inf in 1 of 20 rows",
        ),
        C(
            "coral_distance-one-row",  # returned NaN
            plain(lambda e: gx.metrics.coral_distance(np.ones((1, 3)), np.eye(5, 3))),
            ValueError,
            "`a` has 1 points; at least 2",
        ),
        C(
            "domain_classifier_accuracy-few-rows",  # scikit-learn's "n_splits=5 cannot be greater than ..."
            plain(lambda e: gx.metrics.domain_classifier_accuracy(np.eye(3, 2), np.eye(3, 2) + 1.0)),
            ValueError,
            "at least `n_splits`=5 rows each",
        ),
        C(
            "distortion_matrix-negative-eps",  # NaN blocks from log of a negative ratio
            plain(lambda e: gx.metrics.distortion_matrix(np.eye(20, 2), np.eye(20, 2), eps=-1.0)),
            ValueError,
            "`eps` must be a positive number",
        ),
        C(
            "domain_scores-missing-prediction",  # 'nan' was scored as a domain of its own
            plain(lambda e: gx.metrics.domain_scores(["a", "a", "b", "b"], ["x", None, "y", "y"])),
            ValueError,
            "`labels_pred` holds 1 missing labels",
        ),
        C(
            "spatial_coherence-missing-label",  # two unlabelled neighbours counted as agreeing
            plain(lambda e: gx.metrics.spatial_coherence([np.nan, "a", "b", np.nan], np.eye(4, 2), n_neighbors=1)),
            ValueError,
            "`labels` holds 2 missing labels",
        ),
        C(
            "fuse_anchor-nan-weight",
            plain(lambda e: gx.geometry.fuse_anchor(np.eye(20, 2), np.eye(20, 2), np.ones(20), weight=float("nan"))),
            ValueError,
            "`weight` must be a finite number >= 0",
        ),
        C(
            "reconstruct-key_added-none",
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, key_added=None)),
            ValueError,
            "`key_added` must be a non-empty string",
        ),
        C(
            "reconstruct-key_added-slash",  # written to h5ad as nested groups: the file could not be read back
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, key_added="gears/run1")),
            ValueError,
            "'gears_run1'",
        ),
        C(
            "cluster_domains-key_added-slash",  # an obs column zarr refuses to write
            _cluster_key_added("domain/k3"),
            ValueError,
            "holds a '/'",
        ),
        C(
            "cluster_domains-key_added-empty",
            _cluster_key_added(""),
            ValueError,
            "`key_added` must be a non-empty string",
        ),
        C(
            "spatial_smooth-key_added-not-a-string",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.spatial_smooth(a, use_rep="X_gears", key_added=3)),
            ValueError,
            "`key_added` must be a non-empty string",
        ),
        C(
            "spatial_smooth-key_added-spatial",  # overwrote the coordinates with the smoothed embedding
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.spatial_smooth(a, use_rep="X_gears", key_added="spatial")),
            ValueError,
            "`key_added`='spatial' is reserved",
        ),
        C(
            "spatial_smooth-key_added-spatial_key",  # the same with coordinates under another key
            on(
                lambda e: _with(e.st, lambda a: a.obsm.__setitem__("xy", a.obsm["spatial"])),
                lambda e, a: gx.tl.spatial_smooth(a, use_rep="X_gears", spatial_key="xy", key_added="xy"),
            ),
            ValueError,
            "`key_added`='xy' is `spatial_key`",
        ),
        C(
            "fit_adapter-key_added-spatial",  # overwrote the query's coordinates with its embedding
            on(
                lambda e: _with(e.sc, lambda a: a.obsm.__setitem__("spatial", a.obsm["spatial_gt"])),
                lambda e, a: gx.tl.fit_adapter(a, e.enc, key_added="spatial"),
            ),
            ValueError,
            "is reserved",
        ),
        C(
            "fit_encoder-key_added-spatial",  # trained, then overwrote the spots' coordinates
            on(lambda e: _fresh_st(e), lambda e, a: gx.tl.fit_encoder(a, slide_key="slide", key_added="spatial")),
            ValueError,
            "is reserved",
        ),
        C(
            "cluster_domains-key_added-spatial",  # its record replaced uns['spatial'], the slides' images
            _cluster_key_added("spatial"),
            ValueError,
            "is reserved",
        ),
        C(
            "reconstruct-anchor-arguments-in-intrinsic-mode",  # anchor_k and reference_slide were ignored
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.reconstruct(a, e.geo, anchor=None, anchor_k=5)),
            ValueError,
            "which reads none of",
        ),
        C(
            "reconstruct-unadapted",
            on(lambda e: _with(e.sc, lambda a: a.uns.pop("gears_adapter")), lambda e, a: gx.tl.reconstruct(a, e.geo)),
            ValueError,
            "allow_unadapted",
        ),
        C(
            "reconstruct-wrong-width",
            on(
                lambda e: _with(e.sc, lambda a: a.obsm.__setitem__("X_gears", np.ones((a.n_obs, 3), dtype=np.float32))),
                lambda e, a: gx.tl.reconstruct(a, e.geo),
            ),
            ValueError,
            "embedding dimensions",
        ),
        C(
            "reconstruct-nan-embedding",
            on(
                lambda e: _with(e.sc, lambda a: a.obsm["X_gears"].__setitem__((0, 0), np.nan)),
                lambda e, a: gx.tl.reconstruct(a, e.geo),
            ),
            ValueError,
            "NaN",
        ),
        C(
            "reconstruct-missing-embedding",
            on(lambda e: _with(e.sc, lambda a: a.obsm.pop("X_gears")), lambda e, a: gx.tl.reconstruct(a, e.geo)),
            KeyError,
            "fit_adapter",
        ),
        C(
            "reconstruct-untrained",
            on(
                lambda e: e.sc.copy(),
                lambda e, a: gx.tl.reconstruct(a, gx.model.GEARS(e.st.copy(), slide_key="slide", dim=16, n_heads=2)),
            ),
            RuntimeError,
            "not trained",
        ),
        # model save / load
        C("save-existing-folder", plain(lambda e: e.geo.save(e.saved["geo"])), FileExistsError, "overwrite=True"),
        C(
            "load-missing-folder",
            plain(lambda e: gx.model.GEARS.load(e.saved["geo"].parent / "nowhere")),
            FileNotFoundError,
            "meta.json",
        ),
        C(
            "load-truncated-weights",
            on(
                lambda e: _fresh_st(e),
                lambda e, a: gx.model.GEARS.load(_save_broken(e, e.saved["geo"].parent, "geo_truncated"), a),
            ),
            ValueError,
            "model.pt",
        ),
        C(
            "load-broken-meta",
            plain(lambda e: gx.model.GEARS.load(_save_broken(e, e.saved["geo"].parent, "geo_meta"))),
            ValueError,
            "meta.json",
        ),
        C(
            "load-meta-not-an-object",
            plain(lambda e: gx.model.GEARS.load(_save_broken(e, e.saved["geo"].parent, "geo_notjson_dict"))),
            ValueError,
            "save the model again",
        ),
        C(
            "load-foreign-weights",
            on(
                lambda e: _fresh_st(e),
                lambda e, a: gx.model.GEARS.load(_save_broken(e, e.saved["geo"].parent, "geo_foreign"), a),
            ),
            ValueError,
            "no gearsx module weights",
        ),
        C(
            "load-encoder-wrong-genes",
            on(lambda e: _fresh_st(e)[:, :30].copy(), lambda e, a: gx.model.SharedEncoder.load(e.saved["enc"], a)),
            ValueError,
            "genes",
        ),
        C("load-wrong-class", plain(lambda e: gx.model.GEARS.load(e.saved["enc"])), ValueError, "SharedEncoder"),
        C(
            "load-encoder-without-data",
            plain(lambda e: gx.model.SharedEncoder.load(e.saved["enc"])),
            ValueError,
            "adata=",
        ),
        # tl.cluster_domains / spatial_smooth / stitch
        C(
            "domains-method",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.cluster_domains(a, method="dbscan")),
            ValueError,
            "method",
        ),
        C(
            "domains-scan-needs-k",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.cluster_domains(a, method="scan")),
            ValueError,
            "n_clusters",
        ),
        C(
            "domains-scan-untrained",  # labels from the untrained head
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, method="scan", use_rep="X_gears", n_clusters=3, max_epochs=0),
            ),
            ValueError,
            "`max_epochs` must be an integer >= 1",
        ),
        C(
            "domains-scan-threshold-unreachable",  # self-labelled nothing, silently
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, method="scan", use_rep="X_gears", n_clusters=3, threshold=2.0),
            ),
            ValueError,
            "`threshold` must lie in (0, 1)",
        ),
        C(
            "domains-scan-negative-noise",  # taken as its absolute value
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, method="scan", use_rep="X_gears", n_clusters=3, noise=-0.1),
            ),
            ValueError,
            "`noise` must be a finite number >= 0",
        ),
        C(
            "domains-scan-lr-0",  # torch's optimiser named no argument
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, method="scan", use_rep="X_gears", n_clusters=3, lr=0.0),
            ),
            ValueError,
            "`lr` must be a positive number",
        ),
        C(
            "domains-mclust-max-iter-0",  # an AttributeError from scikit-learn
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, use_rep="X_gears", n_clusters=3, max_iter=0),
            ),
            ValueError,
            "`max_iter` must be an integer >= 1",
        ),
        C(
            "domains-missing-rep",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.cluster_domains(a, use_rep="X_pca")),
            KeyError,
            "sc.pp.pca",
        ),
        C(
            "domains-key-added-adapter-record",  # replaced the record of which encoder adapted the cells
            on(lambda e: e.sc.copy(), lambda e, a: gx.tl.cluster_domains(a, n_clusters=3, key_added="gears_adapter")),
            ValueError,
            "is where gx.tl.fit_adapter keeps its result",
        ),
        C(
            "domains-key-added-slide-column",  # the labels replaced the slide column they were refined within
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.cluster_domains(a, n_clusters=3, key_added="slide")),
            ValueError,
            "is the slide column",
        ),
        C(
            "domain-embedding-key-added-encoder-embedding",  # replaced the embedding the geometry model reads
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.domain_embedding(a, key_added="X_gears", max_epochs=1)),
            ValueError,
            "gx.tl.fit_encoder and gx.tl.fit_adapter keep their results",
        ),
        C(
            "center-key-added-prepare-record",
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide", key_added="gears_prepare"),
            ),
            ValueError,
            "gx.pp.prepare",
        ),
        C(
            "domains-vote-without-refine",  # the vote's width was taken and ignored
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.cluster_domains(a, n_clusters=3, n_spatial_neighbors=30)),
            ValueError,
            "but refine is False",
        ),
        C(
            "domains-refine-too-many-neighbours",  # clipped to each slide's size: a vote over whole slides
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.cluster_domains(a, refine=True, n_spatial_neighbors=10**6)),
            ValueError,
            "largest slide",
        ),
        C(
            "domains-refine-missing-spatial",
            on(
                lambda e: _with(e.st, lambda a: a.obsm.pop("spatial")),
                lambda e, a: gx.tl.cluster_domains(a, refine=True),
            ),
            KeyError,
            "spatial",
        ),
        C(
            "domains-refine-nan-slide",
            on(lambda e: _with(e.st, _nan_slide), lambda e, a: gx.tl.cluster_domains(a, refine=True, n_clusters=3)),
            ValueError,
            "missing values",
        ),
        C(
            "domains-refine-recorded-slide-dropped",
            on(
                lambda e: _with(e.st, lambda a: a.obs.pop("slide")),
                lambda e, a: gx.tl.cluster_domains(a, refine=True, n_clusters=3),
            ),
            KeyError,
            "slide_key",
        ),
        C(
            "domains-refine-one-position-slide",  # voted over neighbours set by row order, without a word
            on(
                lambda e: _with(e.st, _one_point_slide),
                lambda e, a: gx.tl.cluster_domains(a, use_rep="X_gears", refine=True, n_clusters=3),
            ),
            ValueError,
            "distinct position",
        ),
        C(
            "domain_embedding-one-position-slide",
            on(
                lambda e: _with(e.st, _one_point_slide),
                lambda e, a: gx.tl.domain_embedding(a, slide_key="slide", mask_var=None, max_epochs=1),
            ),
            ValueError,
            "distinct position",
        ),
        C(
            "spatial_smooth-one-position-slide",
            on(
                lambda e: _with(e.st, _one_point_slide),
                lambda e, a: gx.tl.spatial_smooth(a, use_rep="X_gears", slide_key="slide"),
            ),
            ValueError,
            "distinct position",
        ),
        C(
            "domains-constant-representation",  # scikit-learn's "parameter 'weights' should have the shape of (3,)"
            on(
                lambda e: _with(e.st, lambda a: a.obsm.__setitem__("X_const", np.ones((a.n_obs, 4)))),
                lambda e, a: gx.tl.cluster_domains(a, use_rep="X_const", n_clusters=3),
            ),
            ValueError,
            "holds 1 distinct row(s), fewer than the 3 domains",
        ),
        C(
            "domains-constant-representation-bic",  # n_clusters=None: mclust's search of 2-9 components
            on(
                lambda e: _with(e.st, lambda a: a.obsm.__setitem__("X_const", np.ones((a.n_obs, 4)))),
                lambda e, a: gx.tl.cluster_domains(a, use_rep="X_const"),
            ),
            ValueError,
            "fewer than the 2 domains any clustering needs",
        ),
        C(
            "domains-option-of-another-method",  # "mclust_eee() got an unexpected keyword argument", after the PCA
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, use_rep="X_gears", n_clusters=3, resolution=2.0),
            ),
            TypeError,
            "method='mclust')` takes no option 'resolution'; its options:",
        ),
        C(
            "domains-too-many-clusters",
            on(lambda e: e.st[:5].copy(), lambda e, a: gx.tl.cluster_domains(a, n_clusters=6)),
            ValueError,
            "n_clusters",
        ),
        C(
            "domains-leiden-resolution-zero",
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, method="leiden", use_rep="X_gears", resolution=0),
            ),
            ValueError,
            "`resolution` must be a positive number",
        ),
        C(
            "domains-leiden-resolution-nan",
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, method="leiden", use_rep="X_gears", resolution=float("nan")),
            ),
            ValueError,
            "`resolution` must be a positive number",
        ),
        C(
            "pseudo-spots-infinite-pitch",
            on(
                lambda e: _with(e.raw_sc, lambda a: a.obsm.__setitem__("spatial", a.obsm["spatial_gt"])),
                lambda e, a: gx.datasets.pseudo_spots(a, spot_diameter=50.0, center_to_center=float("inf")),
            ),
            ValueError,
            "`center_to_center` must be a positive number",
        ),
        C(
            "domain-embedding-missing-slide-key",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.domain_embedding(a, slide_key="section", max_epochs=1)),
            KeyError,
            "slide_key",
        ),
        C(
            "domain-embedding-missing-image",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.domain_embedding(a, image_key="X_image", max_epochs=1)),
            KeyError,
            "embed_patches",
        ),
        C(
            "domain-embedding-missing-genes-mask",
            on(lambda e: _with(e.st, lambda a: a.var.pop("highly_variable")), lambda e, a: gx.tl.domain_embedding(a)),
            KeyError,
            "mask_var",
        ),
        C(
            "domain-embedding-missing-spatial",
            on(lambda e: _with(e.st, lambda a: a.obsm.pop("spatial")), lambda e, a: gx.tl.domain_embedding(a)),
            KeyError,
            "spatial_key",
        ),
        C(
            "domain-embedding-negative-hops",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.domain_embedding(a, n_hops=-1, max_epochs=1)),
            ValueError,
            "n_hops",
        ),
        C(
            "domain-embedding-weight-decay-nan",  # reached torch's optimiser, whose message named no argument of ours
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.domain_embedding(a, weight_decay=float("nan"), max_epochs=1)),
            ValueError,
            "`weight_decay` must be a finite number >= 0",
        ),
        C(
            "domain-embedding-counts",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.domain_embedding(a, layer="counts", max_epochs=1)),
            ValueError,
            "log1p",
        ),
        C(
            "domain-embedding-nan-expression",
            on(lambda e: _with(e.st, _nan_x), lambda e, a: gx.tl.domain_embedding(a, max_epochs=1)),
            ValueError,
            "NaN",
        ),
        C(
            "smooth-missing-spatial",
            on(lambda e: _with(e.st, lambda a: a.obsm.pop("spatial")), lambda e, a: gx.tl.spatial_smooth(a)),
            KeyError,
            "spatial",
        ),
        C(
            "smooth-too-many-neighbours",
            on(lambda e: e.st[:5].copy(), lambda e, a: gx.tl.spatial_smooth(a, n_neighbors=10, slide_key="slide")),
            ValueError,
            "n_neighbors",
        ),
        C(
            "stitch-coincident-patch",
            on(
                lambda e: ad.AnnData(np.zeros((30, 1), dtype=np.float32)),
                lambda e, a: gx.tl.stitch(a, [(np.arange(30), np.zeros((30, 2)))]),
            ),
            ValueError,
            "one point",
        ),
        C(
            "stitch-no-patches",
            on(lambda e: ad.AnnData(np.zeros((30, 1), dtype=np.float32)), lambda e, a: gx.tl.stitch(a, [])),
            ValueError,
            "non-empty",
        ),
        C("stitch-float-indices", _one_patch(np.arange(30) + 0.5), TypeError, "integer positions"),  # was 0..29
        # stitch options: a layout without a word, or an IndexError
        C(
            "stitch-one-landmark",
            _one_patch(np.arange(30), n_landmarks=1),
            ValueError,
            "`n_landmarks` must be an integer >= 3",
        ),  # a 1-D layout
        C(
            "stitch-negative-huber",
            _one_patch(np.arange(30), huber_delta=-1.0),
            ValueError,
            "`huber_delta` must be a positive",
        ),
        C(
            "stitch-nan-anchor",
            _one_patch(np.arange(30), anchor=float("nan")),
            ValueError,
            "`anchor` must be a finite number",
        ),
        C(
            "stitch-no-edges", _one_patch(np.arange(30), k_edges=0), ValueError, "`k_edges` must be an integer >= 1"
        ),  # IndexError
        C(
            "stitch-negative-iterations",
            _one_patch(np.arange(30), max_iter=-5),
            ValueError,
            "`max_iter` must be an integer >= 0",
        ),
        C("stitch-mask-indices", _one_patch(np.arange(30) < 30), TypeError, "flatnonzero"),  # was positions 0, 1
        C("stitch-uncovered-cells", _one_patch(np.arange(20)), ValueError, "in no patch"),
        # metrics
        C(
            "metrics-length-mismatch",
            plain(lambda e: gx.metrics.evaluate_geometry(np.zeros((30, 2)), np.ones((31, 2)))),
            ValueError,
            "same cells",
        ),
        C(
            "metrics-nan",
            plain(lambda e: gx.metrics.evaluate_geometry(np.full((30, 2), np.nan), np.ones((30, 2)))),
            ValueError,
            "NaN",
        ),
        C(
            "metrics-collapsed-truth",  # shell F1 was 1.0 and trustworthiness 1.5 against a placeholder truth
            plain(lambda e: gx.metrics.shell_f1(np.random.default_rng(0).normal(size=(30, 2)), np.zeros((30, 2)))),
            ValueError,
            "no geometry to score against",
        ),
        C(
            "metrics-one-pair",  # Stress-1 was 0 for any layout and the distance correlation NaN
            plain(
                lambda e: gx.metrics.stress1(np.random.default_rng(0).normal(size=(30, 2)), np.eye(30, 2), n_pairs=1)
            ),
            ValueError,
            "`n_pairs` must be at least 3",
        ),
        C(
            "metrics-two-cells",  # one pair: Stress-1 was 0 for any layout
            plain(lambda e: gx.metrics.stress1(np.array([[0.0, 0.0], [5.0, 1.0]]), np.eye(2))),
            ValueError,
            "need at least 3 cells",
        ),
        C(
            "knn_overlap-missing-group",  # "Group nan has 0 cells": NaN matched no cell, itself included
            plain(
                lambda e: gx.metrics.knn_overlap(
                    np.eye(60, 3),
                    np.random.default_rng(0).uniform(size=(60, 2)),
                    k=5,
                    groups=np.r_[np.zeros(30), [np.nan] * 30],
                )
            ),
            ValueError,
            "`groups` is missing",
        ),
        C(
            "mmd-one-point-a-side",  # 0 gave NaN (means of nothing), 1 a number from one row a side
            plain(lambda e: gx.metrics.mmd_rbf(np.eye(30, 4), np.eye(30, 4) + 1.0, max_points=1)),
            ValueError,
            "`max_points` must be an integer >= 2",
        ),
        C(
            "metrics-k-too-large",
            plain(lambda e: gx.metrics.evaluate_geometry(np.eye(10, 2), np.eye(10, 2))),
            ValueError,
            "Lower `k`",
        ),
        C(
            "domain-representation-key-twice",
            on(lambda e: e.st.copy(), lambda e, a: gx.tl.domain_representation(a, ["X_gears", "X_gears"])),
            ValueError,
            "more than once",
        ),
        C(
            "method-comparison-text-scores",
            plain(
                lambda e: gx.pl.method_comparison(
                    pd.DataFrame({"method": ["a", "b"], "spearman": ["0.2", "n/a"]}), metrics=["spearman"], show=False
                )
            ),
            TypeError,
            "not numeric",
        ),
        C(
            "metrics-two-spaces",
            plain(lambda e: gx.metrics.mmd_rbf(np.zeros((30, 8)), np.ones((30, 6)))),
            ValueError,
            "same space",
        ),
        C(
            "metrics-mixing-too-few-points",
            plain(lambda e: gx.metrics.knn_mixing(np.eye(6, 3), np.ones((40, 3)))),
            ValueError,
            "lower `k` below 12",
        ),
        C(
            "metrics-overlap-groups-length",
            plain(lambda e: gx.metrics.knn_overlap(np.eye(40, 2), np.eye(40, 2), k=3, groups=np.zeros(20))),
            ValueError,
            "one group per cell",
        ),
        C(
            "metrics-overlap-no-geometry",  # every distance tied: the overlap read 1.0 whatever the embedding
            plain(lambda e: gx.metrics.knn_overlap(np.eye(40, 2), np.zeros((40, 2)), k=3)),
            ValueError,
            "`coords` has all 40 points at one position",
        ),
        C(
            "metrics-overlap-group-without-geometry",
            plain(
                lambda e: gx.metrics.knn_overlap(
                    np.eye(40, 2), np.r_[np.eye(20, 2), np.ones((20, 2))], k=3, groups=np.repeat(["a", "b"], 20)
                )
            ),
            ValueError,
            "`coords` of group `b` has all 20 points",
        ),
        C(
            "metrics-coherence-too-many-neighbours",
            plain(lambda e: gx.metrics.spatial_coherence(["a", "b", "a"], np.eye(3, 2))),
            ValueError,
            "Lower `n_neighbors`",
        ),
        C(
            "metrics-adata-missing-key",
            on(lambda e: e.sc.copy(), lambda e, a: gx.metrics.evaluate_adata(a, "X_gears_spatial", "spatial_gt")),
            KeyError,
            "X_gears_spatial",
        ),
        C(
            # a layout scored against a slide whose true positions are a placeholder: values came out
            "metrics-adata-truth-at-one-point",
            on(
                lambda e: _with(_fresh_st(e), _layout_then_one_point_slide),
                lambda e, a: gx.metrics.evaluate_adata(a, "pred", "spatial", slide_key="slide"),
            ),
            ValueError,
            "no geometry to score against",
        ),
        C(
            "metrics-adata-small-slide",  # the message named no slide: "got 30. Lower `k`"
            plain(
                lambda e: gx.metrics.evaluate_adata(_two_sections(200, 30), "pred", "spatial_gt", slide_key="section")
            ),
            ValueError,
            "slide 'b' .`obs.'section'.`. has 30 cells",
        ),
        C(
            "metrics-distortion-truth-at-one-point",  # a matrix of log-ratios came out
            plain(lambda e: gx.metrics.distortion_matrix(np.eye(40, 2), np.zeros((40, 2)))),
            ValueError,
            "no geometry to score against",
        ),
        C(
            "metrics-coherence-spots-at-one-point",  # neighbours were the next rows: 1/3 for three labels
            plain(lambda e: gx.metrics.spatial_coherence(np.repeat(["a", "b", "c"], 10), np.zeros((30, 2)))),
            ValueError,
            "no geometry to score against",
        ),
        # pl
        C(
            "pl-distortion-heatmap-truth-at-one-point",
            on(
                lambda e: _with(
                    _with(e.sc, _fake_layout()), lambda a: a.obsm.__setitem__("spatial_gt", np.zeros((a.n_obs, 2)))
                ),
                lambda e, a: gx.pl.distortion_heatmap(a, show=False),
            ),
            ValueError,
            "at 1 distinct position",
        ),
        C(
            "pl-reconstruction-missing-basis",
            on(lambda e: e.sc.copy(), lambda e, a: gx.pl.reconstruction(a, show=False)),
            KeyError,
            "reconstruct",
        ),
        C(
            "pl-reconstruction-nan-coordinates",
            on(lambda e: _with(e.sc, _fake_layout(nan_row=True)), lambda e, a: gx.pl.reconstruction(a, show=False)),
            ValueError,
            "NaN or inf in 1 of",
        ),
        C(
            "pl-reconstruction-missing-gt-key",
            on(
                lambda e: _with(e.sc, _fake_layout()),
                lambda e, a: gx.pl.reconstruction(a, gt_key="spatial_truth", show=False),
            ),
            KeyError,
            "`gt_key`='spatial_truth'",
        ),
        C(
            "pl-reconstruction-negative-size",
            on(lambda e: _with(e.sc, _fake_layout()), lambda e, a: gx.pl.reconstruction(a, size=-1, show=False)),
            ValueError,
            "`size` must be a positive number",
        ),
        C(
            "pl-domains-negative-spot-size",
            on(lambda e: e.st.copy(), lambda e, a: gx.pl.domains(a, color="domain", spot_size=-1, show=False)),
            ValueError,
            "`spot_size` must be a positive number",
        ),
        C(
            "pl-domains-alpha-above-one",
            on(lambda e: e.st.copy(), lambda e, a: gx.pl.domains(a, color="domain", alpha=2, show=False)),
            ValueError,
            "`alpha` must be a number in",
        ),
        C(
            "pl-domains-missing-key",
            on(lambda e: e.st.copy(), lambda e, a: gx.pl.domains(a, show=False)),
            KeyError,
            "gears_domain",
        ),
        C(
            "pl-domains-missing-img_key",  # drew the spots without an image, without a word
            on(
                lambda e: _with(_visium(e, 0.1), lambda a: a.obs.__setitem__("d", pd.Categorical(["x"] * a.n_obs))),
                lambda e, a: gx.pl.domains(a, color="d", img_key="lowres", show=False),
            ),
            KeyError,
            "`img_key='lowres'` is not an image of library 'lib'",
        ),
        C(
            "pl-distortion-missing-truth",
            on(lambda e: e.sc.copy(), lambda e, a: gx.pl.distortion_heatmap(a, show=False)),
            KeyError,
            "X_gears_spatial",
        ),
        C(
            "pl-stitching-missing",
            on(lambda e: e.sc.copy(), lambda e, a: gx.pl.stitching_diagnostics(a, show=False)),
            KeyError,
            "gears",
        ),
        # flags: a string is a truth value to Python, so 'no' and 'False' read as True
        C(
            "cluster_domains-refine-string",  # refine='no' refined
            on(
                lambda e: e.st.copy(),
                lambda e, a: gx.tl.cluster_domains(a, method="kmeans", n_clusters=3, use_rep="X_gears", refine="no"),
            ),
            TypeError,
            "`refine` must be True or False; got 'no'",
        ),
        C(
            "mean_center-copy-string",  # copy='False' returned a copy and left the data uncentred
            on(_fresh_st, lambda e, a: gx.pp.mean_center_per_slide(a, slide_key="slide", copy="False")),
            TypeError,
            "`copy` must be True or False",
        ),
        C(
            "encoder-adversarial-string",
            plain(lambda e: gx.model.SharedEncoder(e.st, adversarial="no"), watch=lambda e: [e.st]),
            TypeError,
            "`adversarial` must be True or False",
        ),
        C(
            "prepare-same-object",  # a typo for (st, sc): every later step ran and placed the spots themselves
            plain(lambda e: gx.pp.prepare(e.raw_st, e.raw_st, slide_key="slide"), watch=lambda e: [e.raw_st]),
            ValueError,
            "pass `adata_st.copy()` as `adata_sc`",
        ),
    ]


def _visium(e: Env, scalef) -> ad.AnnData:
    a = e.st[:50].copy()
    factors = {} if scalef is None else {"tissue_hires_scalef": scalef}
    a.uns["spatial"] = {"lib": {"images": {"hires": np.zeros((64, 64, 3), dtype=np.uint8)}, "scalefactors": factors}}
    return a


def _seed_cases() -> list[Case]:
    """Rows: every AnnData-level step and model method refuses a seed it cannot reproduce from, before it writes.

    ``None`` had reached ``random_state + 1`` inside ``gx.tl.reconstruct`` (a ``TypeError`` naming no
    argument); a negative seed reached NumPy ("expected non-negative integer").
    """
    calls = {  # (the AnnData the call gets, the call given the seed)
        "reconstruct": (lambda e: e.sc.copy(), lambda e, a, rs: gx.tl.reconstruct(a, e.geo, random_state=rs)),
        "fit_adapter": (lambda e: e.sc.copy(), lambda e, a, rs: gx.tl.fit_adapter(a, e.enc, random_state=rs)),
        "fit_encoder": (_fresh_st, lambda e, a, rs: gx.tl.fit_encoder(a, slide_key="slide", random_state=rs)),
        "stitch": (
            lambda e: ad.AnnData(np.zeros((30, 1), dtype=np.float32)),
            lambda e, a, rs: gx.tl.stitch(a, [(np.arange(20), np.zeros((20, 2)))], random_state=rs),
        ),
        "cluster_domains": (
            lambda e: e.st.copy(),
            lambda e, a, rs: gx.tl.cluster_domains(
                a, method="kmeans", n_clusters=3, use_rep="X_gears", random_state=rs
            ),
        ),
        "domain_embedding": (
            lambda e: e.st.copy(),
            lambda e, a, rs: gx.tl.domain_embedding(a, slide_key="slide", random_state=rs),
        ),
        "gears-train": (
            _fresh_st,
            lambda e, a, rs: gx.model.GEARS(a, slide_key="slide", n_out=4, dim=16, n_heads=2, n_inducing=8).train(
                max_epochs=1, random_state=rs
            ),
        ),
        "gears-predict_geometry": (lambda e: e.sc.copy(), lambda e, a, rs: e.geo.predict_geometry(a, random_state=rs)),
        "simulate_tissue": (lambda e: e.st.copy(), lambda e, a, rs: gx.datasets.simulate_tissue(random_state=rs)),
    }
    return [
        Case(
            f"{name}-random_state-{label}",
            on(build, lambda e, a, call=call, seed=seed: call(e, a, seed)),
            ValueError,
            "`random_state` must be an integer >= 0",
        )
        for name, (build, call) in calls.items()
        for label, seed in (("none", None), ("negative", -1), ("generator", np.random.default_rng(0)))
    ]


CASES = _cases() + _seed_cases()


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
