"""Smallest index type for large arrays."""

from __future__ import annotations

import numpy as np

__all__ = ["index_dtype"]


def index_dtype(largest: int) -> type[np.integer]:
    """``np.int32`` when indices up to ``largest`` fit in it, else ``np.int64``.

    Edge tables and permutations of a million cells hold tens of millions of indices; 32 bits halve
    their memory where they suffice.
    """
    return np.int32 if largest < np.iinfo(np.int32).max else np.int64
