"""Reading, checking and writing AnnData: the one getter/setter pair and the key checks of gearsx.

In the style of scanpy's ``_get_obs_rep`` / ``_set_obs_rep``: every function that reads a matrix
from ``X``, a layer or ``obsm``, or writes one back, goes through :func:`get_obs_rep` and
:func:`set_obs_rep`, so that the errors (naming the argument, the key and the fix) and the
"replacing" log lines are written once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gearsx._keys import Key
from gearsx._utils import check_coords, n_distinct_rows, plain
from gearsx._version import __version__

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "anchored_slide_rows",
    "check_distinct_positions",
    "check_finite_matrix",
    "check_obs_key",
    "check_obsm_key",
    "check_slide_key",
    "get_matrix",
    "get_obs_rep",
    "image_slide_key",
    "obsm_coords",
    "prepared_as_given",
    "resolve_slide_key",
    "set_obs_rep",
    "write_record",
]

logger = logging.getLogger(__name__)

#: ``uns`` records whose parameters name the slide column, in the order they are trusted.
_SLIDE_RECORDS = ("gears_encoder", "gears_centered", "gears_prepare", "X_gears_domain")
#: ``obs`` columns that usually name the slide (squidpy's ``library_id``, ``anndata.concat``'s ``batch``, MERFISH's
#: ``slice``, ...).
_SLIDE_COLUMNS = ("slide", "slide_id", "library_id", "sample", "sample_id", "section", "slice", "batch")


#: Slots that gearsx steps write under fixed names and later steps read, with the steps that write them: a
#: ``key_added`` of another step naming one would replace it (a domain record in ``uns['gears_adapter']``
#: hides which encoder the query was adapted with; labels in ``obsm``/``uns['X_gears_domain']`` become
#: :func:`gearsx.tl.cluster_domains`'s default input).
_RESERVED = {
    Key.prepare: ("gx.pp.prepare",),
    Key.centered_layer: ("gx.pp.mean_center_per_slide",),
    Key.patches: ("gx.pp.extract_patches",),
    Key.embedding: ("gx.tl.fit_encoder", "gx.tl.fit_adapter"),
    Key.encoder: ("gx.tl.fit_encoder",),
    Key.adapter: ("gx.tl.fit_adapter",),
    Key.domain_embedding: ("gx.tl.domain_embedding",),
    Key.result: ("gx.tl.reconstruct", "gx.tl.stitch"),
}


def check_key_name(key, *, arg: str = "key_added") -> str:
    """Return ``key``, or raise a ValueError naming ``arg``: a key of ``obsm``/``uns`` is a non-empty string without ``'/'``.

    anndata's files read a ``'/'`` as nesting, so such a key cannot be written back (zarr) or read back
    (h5ad).
    """
    if not isinstance(key, str) or not key:
        msg = f"`{arg}` must be a non-empty string (it names the slots the results go to); got {key!r}."
        raise ValueError(msg)
    if "/" in key:
        msg = (
            f"`{arg}`={key!r} holds a '/': anndata writes such a key as nested groups, so the file "
            "cannot be read back (h5ad) or not written at all (zarr). Use another character, e.g. "
            f"{key.replace('/', '_')!r}."
        )
        raise ValueError(msg)
    return key


def check_key_added(key_added, *, spatial_key: str | None = None, owner: str | None = None) -> str:
    """Return ``key_added``, or raise a ValueError: it names the slots a step writes (:func:`check_key_name`).

    It may not be ``'spatial'``, where scanpy and squidpy keep the coordinates (``obsm``) and the
    images (``uns``), nor ``spatial_key``, the coordinates the step reads: the result would overwrite
    them. Nor may it name a slot that another gearsx step writes under a fixed name and later steps
    read (:data:`_RESERVED`); ``owner`` is the step asking (``'gx.tl.domain_embedding'``), which may.
    """
    check_key_name(key_added)
    if key_added in (Key.spatial, spatial_key):
        why = (
            "is reserved: scanpy and squidpy keep the coordinates in `obsm['spatial']` and the images in "
            "`uns['spatial']`, which the result would overwrite"
            if key_added == Key.spatial
            else f"is `spatial_key`: the result would overwrite the coordinates in `obsm[{key_added!r}]`"
        )
        msg = f"`key_added`={key_added!r} {why}. Pick another name (or keep the default)."
        raise ValueError(msg)
    writers = _RESERVED.get(key_added, ())
    if writers and owner not in writers:
        msg = (
            f"`key_added`={key_added!r} is where {' and '.join(writers)} "
            f"{'keep their results' if len(writers) > 1 else 'keeps its result'}, which later steps read: this "
            "result would replace it. Pick another name (or keep the default)."
        )
        raise ValueError(msg)
    return key_added


def check_obs_key(adata: AnnData, key: str, arg: str, hint: str = "") -> None:
    """Raise a KeyError naming ``arg`` (and a ``hint`` on how to get the column) when ``key`` is not in ``obs``."""
    if key not in adata.obs:
        why = f" ({hint})" if hint else ""
        msg = f"`{arg}`={key!r} is not a column of `adata.obs`{why}; available columns: {list(adata.obs.columns)}."
        raise KeyError(msg)


def group_labels(adata: AnnData, key: str, arg: str, name: str = "adata"):
    """Return ``adata.obs[key]`` as a :class:`pandas.Categorical` of groups (``NaN``: code ``-1``).

    Floats are refused with an error naming ``arg``: a continuous column (a score, a coordinate) would
    make one group of every distinct value, and no majority or count over such groups means anything.
    """
    import pandas as pd

    check_obs_key(adata, key, arg)
    values = adata.obs[key]
    if pd.api.types.is_float_dtype(values.dtype):
        msg = (
            f"`{name}.obs[{key!r}]` holds floats; `{arg}` needs groups (categories, strings, integers). "
            f"Convert it first, e.g. {name}.obs[{key!r}] = {name}.obs[{key!r}].astype('category')."
        )
        raise ValueError(msg)
    return pd.Categorical(values)


def check_obsm_key(adata: AnnData, key: str, arg: str, hint: str = "") -> None:
    """Raise a KeyError naming ``arg`` (and a ``hint`` on how to get the key) when ``key`` is not in ``obsm``."""
    if key not in adata.obsm:
        why = f" ({hint})" if hint else ""
        msg = f"`{arg}={key!r}` is not in `adata.obsm`{why}; available: {sorted(adata.obsm.keys())}."
        raise KeyError(msg)


def check_slide_key(adata: AnnData, slide_key: str | None, arg: str = "slide_key") -> None:
    """Raise when ``slide_key`` is not an ``obs`` column or has missing values (``None`` passes)."""
    if slide_key is None:
        return
    check_obs_key(adata, slide_key, arg)
    missing = adata.obs[slide_key].isna().to_numpy()
    if missing.any():
        msg = (
            f"`adata.obs[{slide_key!r}]` ({arg}) has {int(missing.sum())} missing values; every observation "
            "needs a slide. Fill them (e.g. `adata.obs[key] = adata.obs[key].cat.add_categories('unknown')"
            ".fillna('unknown')`) or drop those observations."
        )
        raise ValueError(msg)


def check_finite_matrix(x, name: str, fix: str = "impute or remove them before preprocessing") -> None:
    """Raise a ValueError when a dense or sparse matrix holds NaN or inf; ``fix`` ends the message.

    One float64 sum first (NaN or inf anywhere makes it non-finite), so a finite matrix costs no
    temporary of its size; the rows are counted only when that sum is not finite.
    """
    values = x.data if sp.issparse(x) else np.asarray(x)
    if np.isfinite(values.sum(dtype=np.float64)):
        return
    if sp.issparse(x):
        csr = sp.csr_matrix(x)
        bad_rows = np.unique(np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[~np.isfinite(csr.data)])
        n_bad, n = len(bad_rows), csr.shape[0]
    else:
        finite = np.isfinite(np.asarray(x))
        n_bad = int((~finite.reshape(len(finite), -1).all(1)).sum()) if finite.ndim else int(not finite)
        n = len(finite) if finite.ndim else 1
    if n_bad:
        msg = f"`{name}` holds NaN or inf in {n_bad} of {n} rows; {fix}."
        raise ValueError(msg)


#: Rows per block in :func:`empty_rows`.
_EMPTY_BLOCK = 65_536


def empty_rows(x) -> np.ndarray:
    """Return which rows of a matrix (dense or sparse) hold no non-zero value: observations without a count.

    By blocks of rows: a dense matrix's non-zero mask would take as many bytes as it has entries.
    """
    if x.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return np.concatenate(
        [np.asarray((x[s : s + _EMPTY_BLOCK] != 0).sum(1)).ravel() == 0 for s in range(0, x.shape[0], _EMPTY_BLOCK)]
    )


#: Stored values sampled by :func:`stored_sample`.
_SAMPLE = 200_000


def stored_sample(x) -> np.ndarray:
    """Up to 200,000 stored values of a matrix, as float64: a sparse matrix's first stored values, else its first rows.

    Only those rows are read (a backed or Dask matrix is never loaded whole, a non-contiguous
    array never copied whole).
    """
    if sp.issparse(x):
        return np.asarray(x.data[:_SAMPLE], dtype=np.float64)
    width = int(np.prod(x.shape[1:])) if len(x.shape) > 1 else 1
    block = x[: max(1, _SAMPLE // max(width, 1))]
    if hasattr(block, "compute"):  # dask
        block = block.compute()
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False).ravel()


def all_integers(sample: np.ndarray) -> bool:
    """Return whether every value of a sample (from :func:`stored_sample`) is an integer (``True`` when empty)."""
    return bool(np.allclose(sample, np.round(sample)))


def holds_counts(x) -> bool:
    """Return whether a matrix holds counts: its stored values (a sample) are integers, not all ``0`` and ``1``.

    Log-normalised expression is integer only where it is zero, so integer values above one are
    counts (raw, or put back into ``X``), whatever ``uns['log1p']`` says.
    """
    sample = stored_sample(x)
    return bool(sample.size) and float(sample.max()) > 1.0 and all_integers(sample)


def looks_logged(adata: AnnData) -> bool:
    """Return whether ``adata.X`` looks log-normalised already (sampled stored values).

    The values decide first: integer values are counts (log-normalised expression is integer only
    at zero), whatever ``uns['log1p']`` says, since that record outlives the matrix it describes
    (counts put back into ``X``, or ``prepare(..., layer='counts')`` on processed data). Non-integer
    values are log-normalised when ``uns['log1p']`` is present or all lie below 20.
    """
    sample = stored_sample(adata.X)
    if sample.size == 0:
        return "log1p" in adata.uns
    if all_integers(sample):
        return False
    return "log1p" in adata.uns or float(sample.max()) < 20.0


def prepared_as_given(adata: AnnData, layer: str | None = None) -> bool:
    """Return whether ``layer`` is ``X`` and :func:`gearsx.pp.prepare` kept it as given (``normalize=False``).

    Such values are declared not to be counts, even where they are integers; a layer is never covered.
    """
    if layer is not None:
        return False
    record = adata.uns.get(Key.prepare)
    value = record.get("params", {}).get("normalize", "auto") if isinstance(record, dict) else "auto"
    return not isinstance(value, str) and not bool(value)


def check_log_expression(x, name: str, fix: str, *, as_given: bool = False) -> None:
    """Raise a ValueError naming ``name`` and ``fix`` when a matrix that should be log-normalised holds counts.

    ``as_given``: the values were declared not to be counts (``prepare(..., normalize=False)``), so
    integers pass.
    """
    if not as_given and holds_counts(x):
        msg = f"`{name}` holds integer counts, but log-normalised expression is expected; {fix}."
        raise ValueError(msg)


def layer_names(adata: AnnData) -> list[str]:
    """Names of ``adata``'s layers, sorted; anndata 0.13 also lists ``X`` among them, as the key ``None``."""
    return sorted(str(k) for k in adata.layers.keys() if k is not None)


def get_matrix(adata: AnnData, layer: str | None, hint: str = ""):
    """``adata.layers[layer]`` or ``adata.X`` as stored (sparse stays sparse), with a KeyError naming the layer."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        why = f" ({hint})" if hint else ""
        msg = f"`layer`={layer!r} is not in `adata.layers`{why}; available: {layer_names(adata)}."
        raise KeyError(msg)
    return adata.layers[layer]


def get_obs_rep(
    adata: AnnData,
    *,
    use_rep: str | None = None,
    layer: str | None = None,
    dense: bool = False,
    dtype=None,
    arg: str = "use_rep",
    hint: str = "",
):
    """Return the ``(n_obs, n_features)`` matrix in ``obsm[use_rep]``, ``layers[layer]`` or ``X``.

    ``use_rep='X'`` (or neither key) reads ``X``. With ``dense=True`` a sparse matrix is densified
    and the result checked to be a finite, non-empty 2-D array (the error names ``arg``); ``dtype``
    casts it. Missing keys raise a ``KeyError`` naming ``arg``, the key and the ``hint``.
    """
    if use_rep is not None and layer is not None:
        msg = "Pass `use_rep` or `layer`, not both."
        raise ValueError(msg)
    if use_rep is not None and use_rep != "X":
        check_obsm_key(adata, use_rep, arg, hint)
        x, name = adata.obsm[use_rep], f"obsm[{use_rep!r}]"
    else:
        x, name = get_matrix(adata, layer, hint), f"layers[{layer!r}]" if layer else "X"
    if not dense:
        return x
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        msg = f"`{arg}`: `adata.{name}` must be a non-empty 2-D (n_obs, n_features) array; got shape {x.shape}."
        raise ValueError(msg)
    check_finite_matrix(x, name)
    return x if dtype is None else x.astype(dtype, copy=False)


def dense_row_batches(x, batch_size: int, *, indices=None, name: str = "X"):
    """Yield the rows of a matrix as dense float32 blocks of ``batch_size`` rows, checked finite.

    ``x`` may be dense, SciPy-sparse, a backed AnnData matrix (h5py dataset or sparse dataset) or a
    Dask array: only one block is ever dense in memory, so inference over a million cells never
    densifies the whole matrix. ``indices`` selects rows, in their order (each block is read in
    increasing row order, as backed files require). At least one (possibly empty) block is
    yielded, so the width survives empty input.
    """
    indices = None if indices is None else np.asarray(indices)
    n = x.shape[0] if indices is None else len(indices)
    for start in range(0, max(n, 1), batch_size):
        back = None
        if indices is None:
            block = x[start : start + batch_size]
        else:
            rows, back = np.unique(indices[start : start + batch_size], return_inverse=True)
            block = x[rows]
        if hasattr(block, "compute"):  # dask
            block = block.compute()
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        block = block.astype(np.float32, copy=False)
        if back is not None:
            block = block[np.asarray(back).ravel()]
        check_finite_matrix(block, name)
        yield block


def set_obs_rep(adata: AnnData, value, *, obsm: str | None = None, layer: str | None = None) -> None:
    """Write ``value`` to ``adata.obsm[obsm]`` or ``adata.layers[layer]``, logging when it replaces a key."""
    if (obsm is None) == (layer is None):
        msg = "Pass exactly one of `obsm` and `layer`."
        raise ValueError(msg)
    slot, key = (adata.obsm, obsm) if obsm is not None else (adata.layers, layer)
    if key in slot:
        logger.info("replacing existing %s[%r]", "obsm" if obsm is not None else "layers", key)
    slot[key] = value


def write_record(adata: AnnData, key: str, params: dict, **diagnostics) -> dict:
    """Write the ``uns[key]`` record of a step: ``{'params': {..., 'version': ...}, **diagnostics}``.

    Every gearsx function records its call the same way: the parameters (``None`` values left out:
    older anndata releases could not write them to h5ad, and a record should read the same whichever
    release wrote it) with the gearsx version, next to the step's diagnostics. An existing record
    under ``key`` is replaced. Returns the record.
    """
    record = {"params": {**{k: v for k, v in params.items() if v is not None}, "version": __version__}, **diagnostics}
    adata.uns[key] = record
    return record


def recorded_encoder_id(adata: AnnData, record: str, use_rep: str) -> str | None:
    """Return the ``encoder_id`` in ``uns[record]`` when that record wrote ``obsm[use_rep]``, else ``None``.

    :func:`gearsx.tl.fit_encoder` and :func:`gearsx.tl.fit_adapter` record the fingerprint of the
    encoder whose space their embeddings live in; an embedding under another key, or a record
    written before fingerprints were kept, has none.
    """
    entry = adata.uns.get(record)
    if not isinstance(entry, dict) or not isinstance(params := entry.get("params"), dict):
        return None
    value = entry.get("encoder_id") if params.get("key_added") == use_rep else None
    return str(value) if value else None


def image_slide_key(adata: AnnData) -> str | None:
    """Return the ``obs`` column telling apart the slides whose images ``uns['spatial']`` keys, or ``None``.

    The slide column an earlier gearsx step recorded (:func:`resolve_slide_key`); else the first
    column usually naming the slide (``library_id``, ``sample_id``, ...) among whose values a library
    of ``uns['spatial']`` is found; else ``obs['library_id']``, scanpy's name for it when it
    concatenates Visium samples.
    """
    key = resolve_slide_key(adata, None, warn=False)
    if key is not None:
        return key
    spatial = adata.uns.get(Key.spatial)
    libraries = {str(k) for k in spatial} if isinstance(spatial, dict) else set()
    for column in _SLIDE_COLUMNS:
        if column in adata.obs and libraries & set(adata.obs[column].astype(str).unique()):
            return column
    return "library_id" if "library_id" in adata.obs else None


def resolve_slide_key(
    adata: AnnData, slide_key: str | None, arg: str = "slide_key", *, warn: bool = True
) -> str | None:
    """Return ``slide_key``, or the slide column recorded by an earlier gearsx step when it is ``None``.

    Functions that look at physical neighbours must never pool spots of different slides,
    which share one coordinate frame. When ``slide_key`` is not passed, the column recorded
    in ``uns['gears_encoder']``, ``uns['gears_centered']``, ``uns['gears_prepare']`` or
    ``uns['X_gears_domain']`` (:func:`gearsx.tl.domain_embedding`) is used
    (and logged); ``None`` is returned only when no step recorded one (a single slide). When no
    step recorded any choice and a column that usually names the slide (``obs['slide']``,
    ``obs['library_id']``, ``obs['batch']``, ...) holds several values, a warning names it: those
    spots are read as one slide, so spots of different slides can become neighbours (``warn=False``:
    no warning, for callers that only count slides).
    """
    if slide_key is not None:
        check_slide_key(adata, slide_key, arg)
        if warn:
            _warn_coarser_than_recorded(adata, slide_key, arg)
        return slide_key
    decided = False  # an earlier step recorded a choice, even "one slide"
    for record, params in _slide_records(adata):
        key = params.get("slide_key")
        decided = decided or "slide_key" in params
        if key:
            key = str(key)
            if key not in adata.obs:
                msg = (
                    f"`adata.uns[{record!r}]` records slide_key={key!r}, which is no longer a column of `adata.obs`; "
                    f"pass `{arg}=` explicitly."
                )
                raise KeyError(msg)
            check_slide_key(adata, key, arg)
            logger.info("using %s=%r recorded in uns[%r]", arg, key, record)
            return key
    if warn and not decided:
        warn_unkeyed_slides(adata, arg)
    return None


def anchored_slide_rows(adata: AnnData, record: dict, name: str = "adata_st") -> tuple[str | None, np.ndarray]:
    """Return the slide column and the rows of ``adata`` on the slide an anchored reconstruction lives on.

    ``record`` is the reconstruction's ``uns[key]['anchor']``.

    The slide column is the one the model was trained with, as :func:`gearsx.tl.reconstruct` recorded
    it (``record['slide_key']``; a model of one slide records none, and every row counts); a record of
    a version that did not keep it falls back on the column an earlier step recorded in ``adata``
    (:func:`resolve_slide_key`). :func:`gearsx.tl.project_groups` and
    :func:`gearsx.pl.reconstruction`'s ``reference=`` read the slide through this one rule.
    """
    slide = str(record["slide"])
    if "slide_key" in record or "spot_coords" in record:  # recorded since project_groups came (None: one slide)
        slide_key = record.get("slide_key")
    else:
        slide_key = resolve_slide_key(adata, None)
    if slide_key is None:
        return None, np.arange(adata.n_obs)
    if slide_key not in adata.obs:
        msg = (
            f"`{name}.obs` has no column {slide_key!r}, the slide column of the model the cells were anchored with: "
            "pass the spatial data the model was trained on."
        )
        raise KeyError(msg)
    slides = adata.obs[slide_key].astype(str).to_numpy()
    rows = np.flatnonzero(slides == slide)
    if not len(rows):
        msg = (
            f"The reconstruction is anchored on slide {slide!r}, which `{name}` does not hold (its "
            f"obs[{slide_key!r}]: {sorted(set(slides))[:10]}); pass the spatial data the model was trained on."
        )
        raise ValueError(msg)
    return slide_key, rows


def _slide_records(adata: AnnData):
    """Yield ``(record, params)`` for every record of :data:`_SLIDE_RECORDS` in ``uns`` whose parameters are a dict."""
    for record in _SLIDE_RECORDS:
        entry = adata.uns.get(record)
        params = entry.get("params", entry) if isinstance(entry, dict) else None
        if isinstance(params, dict):
            yield record, params


def recorded_slide_key(adata: AnnData) -> tuple[str, str] | None:
    """Return ``(record, key)`` for the first slide column an earlier gearsx step recorded that is still in ``obs``."""
    for record, params in _slide_records(adata):
        key = params.get("slide_key")
        if key and str(key) in adata.obs:
            return record, str(key)
    return None


def _warn_coarser_than_recorded(adata: AnnData, slide_key: str, arg: str) -> None:
    """Warn when a passed slide column puts slides of the recorded one together (another column, coarser).

    A finer column (e.g. fields of view within slides) keeps every slide apart and is fine; a coarser
    one (e.g. the donor of several slides) makes spots of different slides, each in its own
    coordinate frame, spatial neighbours.
    """
    recorded = recorded_slide_key(adata)
    if recorded is None or recorded[1] == slide_key:
        return
    record, key = recorded
    per_group = adata.obs.groupby(adata.obs[slide_key].astype(str), observed=True)[key].nunique()
    if (per_group > 1).any():
        logger.warning(
            "`%s=%r` puts slides of `obs[%r]` (recorded in uns[%r]) together: %d value(s) of it hold spots of "
            "several of those slides, each in its own coordinate frame, so spots of different slides become "
            "spatial neighbours. Pass `%s=%r` unless the slides share one frame.",
            arg, slide_key, key, record, int((per_group > 1).sum()), arg, key,
        )  # fmt: skip


def warn_unkeyed_slides(adata: AnnData, arg: str) -> None:
    """Warn when data read as one slide hold a column that usually names several slides."""
    for column in _SLIDE_COLUMNS:
        if column in adata.obs and (n := adata.obs[column].nunique()) > 1:
            logger.warning(
                "`%s` is None and no earlier gearsx step recorded one, so all %d observations are read as "
                "one slide, but `adata.obs[%r]` holds %d values: if they are separate slides or sections, pass "
                "`%s=%r` (else spots of different slides can become spatial neighbours).",
                arg, adata.n_obs, column, n, arg, column,
            )  # fmt: skip
            return


def check_distinct_positions(
    coords: np.ndarray,
    slides,
    *,
    spatial_key: str,
    slide_key: str | None,
    minimum: int = 2,
    items: str = "spots",
    purpose: str = "learn",
) -> None:
    """Raise when a slide's coordinates hold fewer than ``minimum`` distinct positions (or than its spots, if fewer).

    Such a slide has no geometry: its spots' spatial neighbours, positives or miniset targets
    would be set by their order in ``adata``, not by where they lie. It is usually a placeholder
    (e.g. ``obsm['spatial']`` filled with zeros for a slide whose positions were never read).
    ``slides``: one label per row (``None``: one slide). The error names ``obsm[spatial_key]``,
    the slide (by its ``obs[slide_key]`` value) and the fix; ``items`` names the rows ("spots",
    "cells") and ``purpose`` what the geometry was for ("learn", "score against").
    """
    xy = np.asarray(coords)
    labels = np.zeros(len(xy), dtype=np.int64) if slides is None else np.asarray(slides)
    for name in np.unique(labels):
        pts = xy[labels == name]
        n = n_distinct_rows(pts)
        if n >= min(len(pts), minimum):
            continue
        where = "" if slide_key is None else f" of slide {plain(name)!r} (`obs[{slide_key!r}]`)"
        msg = (
            f"`adata.obsm[{spatial_key!r}]` puts the {len(pts)} {items}{where} at {n} distinct position(s): "
            f"there is no geometry to {purpose}. Check the coordinates (e.g. all {items} at one point, a placeholder "
            f"for positions that were never read){'' if slide_key is None else ', or leave that slide out'}."
        )
        raise ValueError(msg)


def obsm_coords(adata: AnnData, key: str, what: str) -> np.ndarray:
    """Return the first two columns of ``adata.obsm[key]`` as float64; errors name ``key`` and ``what`` it holds.

    Rows with NaN or infinity are an error: a scatter plot would leave them out without a word, and
    an alignment would fail on them.
    """
    if key not in adata.obsm:
        msg = f"`adata.obsm[{key!r}]` ({what}) is missing; available: {list(adata.obsm.keys())}."
        raise KeyError(msg)
    x = np.asarray(adata.obsm[key], dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        msg = f"`adata.obsm[{key!r}]` must be (n_obs, >=2) coordinates; got shape {x.shape}."
        raise ValueError(msg)
    return check_coords(x[:, :2], name=f"adata.obsm[{key!r}]")
