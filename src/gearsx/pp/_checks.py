from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["check_finite_matrix", "check_obs_key", "check_slide_key", "get_matrix", "obsm_coords", "resolve_slide_key"]

logger = logging.getLogger(__name__)

#: ``uns`` records whose parameters name the slide column, in the order they are trusted.
_SLIDE_RECORDS = ("gears_encoder", "gears_centered", "gears_prepare")


def check_obs_key(adata: AnnData, key: str, arg: str) -> None:
    """Raise a KeyError naming ``arg`` when ``key`` is not an ``obs`` column."""
    if key not in adata.obs:
        msg = f"`{arg}`={key!r} is not a column of `adata.obs`; available columns: {list(adata.obs.columns)}."
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


def check_finite_matrix(x, name: str) -> None:
    """Raise a ValueError when a dense or sparse matrix holds NaN or inf."""
    data = x.data if sp.issparse(x) else np.asarray(x)
    if not np.isfinite(data).all():
        msg = f"`{name}` holds NaN or inf values; impute or remove them before preprocessing."
        raise ValueError(msg)


def get_matrix(adata: AnnData, layer: str | None):
    """``adata.layers[layer]`` or ``adata.X``, with a KeyError naming the layer."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        msg = f"`layer`={layer!r} is not in `adata.layers`; available: {sorted(adata.layers.keys())}."
        raise KeyError(msg)
    return adata.layers[layer]


def resolve_slide_key(adata: AnnData, slide_key: str | None, arg: str = "slide_key") -> str | None:
    """Return ``slide_key``, or the slide column recorded by an earlier gearsx step when it is ``None``.

    Functions that look at physical neighbours must never pool spots of different slides,
    which share one coordinate frame. When ``slide_key`` is not passed, the column recorded
    in ``uns['gears_encoder']``, ``uns['gears_centered']`` or ``uns['gears_prepare']`` is used
    (and logged); ``None`` is returned only when no step recorded one (a single slide).
    """
    if slide_key is not None:
        check_slide_key(adata, slide_key, arg)
        return slide_key
    for record in _SLIDE_RECORDS:
        entry = adata.uns.get(record)
        if not isinstance(entry, dict):
            continue
        params = entry.get("params", entry)
        key = params.get("slide_key") if isinstance(params, dict) else None
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
    return None


def obsm_coords(adata: AnnData, key: str, what: str) -> np.ndarray:
    """Return the first two columns of ``adata.obsm[key]`` as float64; errors name ``key`` and ``what`` it holds."""
    if key not in adata.obsm:
        msg = f"`adata.obsm[{key!r}]` ({what}) is missing; available: {list(adata.obsm.keys())}."
        raise KeyError(msg)
    x = np.asarray(adata.obsm[key], dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        msg = f"`adata.obsm[{key!r}]` must be (n_obs, >=2) coordinates; got shape {x.shape}."
        raise ValueError(msg)
    return x[:, :2]
