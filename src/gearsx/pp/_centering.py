from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gearsx._anndata import (
    check_finite_matrix,
    check_key_added,
    check_log_expression,
    check_slide_key,
    get_obs_rep,
    prepared_as_given,
    recorded_slide_key,
    set_obs_rep,
    write_record,
)
from gearsx._keys import Key
from gearsx._utils import checks_flags

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["mean_center_per_slide"]

logger = logging.getLogger(__name__)

#: Largest dense output (bytes) written without ``allow_large=True``.
MAX_DENSE_BYTES = 8 * 1024**3
_ROW_BLOCK = 8192
_F32_MAX = float(np.finfo(np.float32).max)


def slide_means(x, codes: np.ndarray, n_slides: int) -> np.ndarray:
    """Per-slide column means ``(n_slides, n_features)`` (float64) of a dense or sparse ``x``.

    Computed as ``(indicator^T x) / counts``: sparse-friendly, ``x`` is never densified.
    """
    n = x.shape[0]
    indicator = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_slides, n))
    sums = indicator @ x
    sums = np.asarray(sums.toarray() if sp.issparse(sums) else sums, dtype=np.float64)
    return sums / np.maximum(np.bincount(codes, minlength=n_slides), 1)[:, None]


#: Slides with fewer observations than this draw a warning: centring removes ``1 / n`` of each
#: observation's own profile with the slide mean (a slide of one is set to the overall mean).
MIN_SLIDE_OBS = 10


def _check_slide_sizes(names, counts: np.ndarray, slide_key: str | None) -> None:
    """Refuse slides of one observation (centring erases it) and warn about slides below :data:`MIN_SLIDE_OBS`.

    Only among several slides: one slide's centring is the identity, whatever its size.
    """
    present = counts > 0
    if present.sum() < 2:
        return
    single = [str(n) for n, c in zip(names, counts, strict=True) if c == 1]
    if single:
        msg = (
            f"{len(single)} slide(s) of obs[{slide_key!r}] hold a single observation (e.g. {single[:3]}): centring "
            "would set each to the overall mean, erasing its expression. Is `slide_key` the column of slides "
            "(sections), not of samples or cells? Drop such observations, or merge them into a slide."
        )
        raise ValueError(msg)
    small = [(str(n), int(c)) for n, c in zip(names, counts, strict=True) if 0 < c < MIN_SLIDE_OBS]
    if small:
        logger.warning(
            "mean_center_per_slide: %d of %d slides of obs[%r] hold fewer than %d observations (e.g. %s): "
            "centring takes a large share of each one's own profile away with its slide's mean. Check that "
            "`slide_key` names slides (sections).",
            len(small), int(present.sum()), slide_key, MIN_SLIDE_OBS, small[:3],
        )  # fmt: skip


@checks_flags
def mean_center_per_slide(
    adata: AnnData,
    *,
    slide_key: str | None,
    layer: str | None = None,
    key_added: str = Key.centered_layer,
    allow_large: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Per-slide, per-gene mean centring: ``x - mean_slide + mean_all`` (see :ref:`gears-preprocessing`).

    The single most effective batch correction found while developing gearsx: it removes
    each slide's gene-wise offset (on log-normalised data, a per-slide capture
    efficiency is exactly such an offset) while leaving within-slide spatial structure
    untouched (Moran's I within a slide is invariant to it). Adding back the global
    mean keeps values on the original scale.

    Parameters
    ----------
    adata
        Log-normalised data with the slide of each observation in ``obs[slide_key]`` (integer
        counts are an error: per-slide offsets of counts are no capture efficiency).
    slide_key
        ``obs`` column with the slide. ``None``: the slide column :func:`gearsx.pp.prepare`
        recorded, when ``adata`` has it (logged), else one slide (or an SC data set): the layer is
        then a float32 copy of the input, so every data set can offer the same layer.
    layer
        Layer to centre instead of ``X``.
    key_added
        Layer that receives the centred matrix (dense float32: centring destroys sparsity); not
        ``'counts'``, where :func:`gearsx.pp.prepare` keeps the raw counts.
    allow_large
        The output is dense; above 8 GB it raises unless this is ``True``. Sparse input is
        densified only block by block of rows, never as a whole.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``layers[key_added]`` and
    ``uns[key_added]`` (``params``, ``slides``, ``n_obs_per_slide``). With a single slide
    the layer equals the input (a float32 copy) and the log says so.

    Examples
    --------
    >>> import scanpy as sc, gearsx as gx
    >>> st, _ = gx.datasets.simulate_tissue(n_cells_per_slide=3000, random_state=0)
    >>> sc.pp.normalize_total(st)
    >>> sc.pp.log1p(st)
    >>> gx.pp.mean_center_per_slide(st, slide_key="slide")
    >>> gx.metrics.slide_separability(st, slide_key="slide", layer="gears_centered")["balanced_accuracy"] < 0.6
    True
    """
    check_key_added(key_added, owner="gx.pp.mean_center_per_slide")
    if key_added == Key.counts_layer:
        msg = (
            f"`key_added`={key_added!r} would overwrite the raw counts that `gx.pp.prepare` keeps in "
            f"`layers[{Key.counts_layer!r}]` (and later steps read) with centred values. Pick another name (or keep "
            f"the default {Key.centered_layer!r})."
        )
        raise ValueError(msg)
    if slide_key is None and (recorded := recorded_slide_key(adata)) is not None:
        # slides left uncentred keep their batch offsets, silently: take the column prepare recorded
        slide_key = recorded[1]
        logger.info("mean_center_per_slide: using slide_key=%r recorded in uns[%r]", slide_key, recorded[0])
    check_slide_key(adata, slide_key)
    x = get_obs_rep(adata, layer=layer)
    name = f"layers[{layer!r}]" if layer else "X"
    check_finite_matrix(x, name)
    data = x.data if sp.issparse(x) else np.asarray(x)
    if data.size and float(np.abs(data).max()) > _F32_MAX / 2:
        msg = (
            f"`{name}` holds values beyond the float32 range the centred layer is written in "
            f"(max |x| {float(np.abs(data).max()):.3g}); log-normalise first (gx.pp.prepare)."
        )
        raise ValueError(msg)
    check_log_expression(
        x,
        name,
        "normalise and log-transform it first (gx.pp.prepare, or scanpy's normalize_total and log1p), or pass "
        "the layer that holds the log-normalised values; integers on a normalised scale that are not counts: "
        "gx.pp.prepare(..., normalize=False)",
        as_given=prepared_as_given(adata, layer),
    )
    n, g = x.shape
    nbytes = n * g * 4
    if nbytes > MAX_DENSE_BYTES and not allow_large:
        msg = (
            f"The centred layer is dense: {n} x {g} float32 = {nbytes / 1024**3:.1f} GB. Subset to highly variable "
            "genes first (gx.pp.prepare), or pass allow_large=True."
        )
        raise MemoryError(msg)
    adata = adata.copy() if copy else adata
    import pandas as pd

    slides = (
        adata.obs[slide_key].astype("category")
        if slide_key is not None
        else pd.Series(pd.Categorical(["all"] * adata.n_obs), index=adata.obs_names)
    )
    codes = slides.cat.codes.to_numpy()
    n_slides = len(slides.cat.categories)
    counts = np.bincount(codes, minlength=n_slides)
    _check_slide_sizes(slides.cat.categories, counts, slide_key)
    means = slide_means(x, codes, n_slides)
    overall = (counts[:, None] * means).sum(0) / n
    shift = (overall[None, :] - means).astype(np.float32)  # added to each row of its slide
    if n_slides == 1:
        logger.info("mean_center_per_slide: a single slide in obs[%r]; centring is the identity.", slide_key)
    out = np.empty((n, g), dtype=np.float32)
    for s in range(0, n, _ROW_BLOCK):
        block = x[s : s + _ROW_BLOCK]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        out[s : s + _ROW_BLOCK] = block + shift[codes[s : s + _ROW_BLOCK]]
    set_obs_rep(adata, out, layer=key_added)
    write_record(
        adata,
        key_added,
        {"slide_key": slide_key or "", "layer": layer or ""},
        slides=np.asarray(slides.cat.categories.astype(str)),
        n_obs_per_slide=counts.astype(np.int64),
    )
    return adata if copy else None
