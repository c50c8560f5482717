from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["check_finite_matrix", "check_obs_key", "get_matrix"]


def check_obs_key(adata: AnnData, key: str, arg: str) -> None:
    """Raise a KeyError naming ``arg`` when ``key`` is not an ``obs`` column."""
    if key not in adata.obs:
        msg = f"`{arg}`={key!r} is not a column of `adata.obs`; available columns: {list(adata.obs.columns)}."
        raise KeyError(msg)


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
