"""Spatially local orders of points (for blocks of nearby cells, and cache-friendly loops over edges)."""

from __future__ import annotations

import numpy as np

from gearsx._utils import check_coords

__all__ = ["morton_order"]


def morton_order(coords: np.ndarray, *, bits: int = 16) -> np.ndarray:
    """Order points along a Morton (Z-order) curve of their 2-D coordinates.

    Coordinates are quantised to a ``2^bits`` grid over their bounding box and the bits
    of ``x`` and ``y`` are interleaved; nearby points get nearby ranks (mostly), so
    contiguous blocks of the order are spatially compact. The stitch's stress solve
    renumbers the cells in this order of its start layout, so that the cells of an edge
    are close in memory.

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.metrics import morton_order
    >>> morton_order(np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])).tolist()
    [1, 3, 2, 0]
    """
    xy = check_coords(coords, name="coords")
    lo, span = xy.min(0), np.ptp(xy, axis=0)
    q = ((xy - lo) / np.where(span > 0, span, 1.0) * (2**bits - 1)).astype(np.uint64)
    code = np.zeros(len(xy), dtype=np.uint64)
    for b in range(bits):
        bit = np.uint64(b)
        code |= ((q[:, 0] >> bit) & np.uint64(1)) << np.uint64(2 * b)
        code |= ((q[:, 1] >> bit) & np.uint64(1)) << np.uint64(2 * b + 1)
    return np.argsort(code, kind="stable")
