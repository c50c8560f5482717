from __future__ import annotations

import numpy as np

__all__ = ["as_rng"]


def as_rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` for ``random_state``.

    An integer (or ``None``) seeds a fresh PCG64 generator; a generator is used as is,
    so callers can thread one stream through several steps.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, int | np.integer)):
        msg = f"`random_state` must be an int, None or a numpy Generator, got {type(random_state).__name__}."
        raise TypeError(msg)
    if random_state is not None and random_state < 0:
        msg = f"`random_state` must be an integer >= 0 (a seed); got {random_state!r}."
        raise ValueError(msg)
    return np.random.default_rng(random_state)
