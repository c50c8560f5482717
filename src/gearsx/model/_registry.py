"""A small, explicit AnnData registry for gearsx models.

Why not scvi-tools' ``AnnDataManager``: it writes ``_scvi_*`` columns into ``obs`` and an id
into ``uns``. That id travels with ``.copy()`` and subsets, so a copy was resolved to the
*original* object's manager (a model built on a subset trained on the full data), and two
classes registering one object overwrote each other's ``_scvi_slide`` column. gearsx models
read three things from their AnnData (an ``obsm`` key, an expression layer, a slide column),
so a registry of those names is all they need. It is keyed by the object itself (held
weakly), never by anything the AnnData carries, and registering writes nothing into it.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["Registration", "Registry"]


@dataclass(frozen=True)
class Registration:
    """What ``setup_anndata`` recorded for one AnnData object."""

    setup_args: dict
    slide_names: tuple[str, ...]

    def slide_codes(self, adata: AnnData) -> np.ndarray:
        """Integer slide code of every observation (0 for all when there is no slide column)."""
        key = self.setup_args.get("slide_key")
        if key is None:
            return np.zeros(adata.n_obs, dtype=np.int64)
        if key not in adata.obs:
            msg = f"`adata.obs[{key!r}]` was removed after setup_anndata; add it back or set the data up again."
            raise KeyError(msg)
        codes = pd.Categorical(adata.obs[key].astype(str), categories=list(self.slide_names)).codes
        if (codes < 0).any():
            msg = f"`adata.obs[{key!r}]` changed after setup_anndata (new slides); set the data up again."
            raise ValueError(msg)
        return codes.astype(np.int64)


def slide_names(adata: AnnData, slide_key: str | None) -> tuple[str, ...]:
    """Slide names in category order (one unnamed slide when ``slide_key`` is ``None``)."""
    if slide_key is None:
        return ("0",)
    col = adata.obs[slide_key]
    cats = col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else pd.Index(sorted(col.unique()))
    present = set(col.astype(str))
    return tuple(str(c) for c in cats if str(c) in present)


class Registry:
    """Registrations of one model class, keyed by AnnData object identity (held weakly)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Registration]] = {}

    def add(self, adata: AnnData, registration: Registration) -> None:
        """Register ``adata`` (replacing an earlier registration of the same object)."""
        key = id(adata)
        self._entries[key] = (weakref.ref(adata, lambda _, key=key: self._entries.pop(key, None)), registration)

    def get(self, adata: AnnData) -> Registration | None:
        """Return the registration of this very object, or ``None`` (copies and subsets are not registered)."""
        entry = self._entries.get(id(adata))
        if entry is None or entry[0]() is not adata:
            return None
        return entry[1]

    @contextmanager
    def restore_on_error(self, adata: AnnData):
        """Undo a registration made inside the block when the block fails."""
        key = id(adata)
        before = self._entries.get(key)
        try:
            yield
        except BaseException:
            if before is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = before
            raise
