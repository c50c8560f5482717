"""Compiled loops (numba) shared by the geometry modules.

numba comes with pynndescent (a dependency). A loop is compiled here only where array operations
would allocate edge-sized temporaries or repeat a large sort; each use says what it gained.
"""

from __future__ import annotations

import functools

__all__ = ["compiled"]


@functools.cache
def compiled(fn):
    """Compile a loop with numba, once per process, cached on disk, releasing the GIL while it runs."""
    import numba

    return numba.njit(cache=True, nogil=True)(fn)
