"""Short content fingerprints: which weights, which tiles made a stored result."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Tiles hashed, evenly spaced, for an array's fingerprint (a memory-mapped file is never read whole).
N_SAMPLED = 64


def module_fingerprint(module: torch.nn.Module) -> str:
    """16 hex digits of a SHA-256 over a module's parameters and buffers (by name, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def sampled_rows(n_rows: int) -> np.ndarray:
    """Up to :data:`N_SAMPLED` evenly spaced row indices of ``n_rows`` rows, first and last included."""
    if n_rows <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n_rows - 1, N_SAMPLED).round().astype(int))


def array_fingerprint(array) -> str:
    """16 hex digits of a SHA-256 over an array's shape, dtype and :func:`sampled_rows` rows."""
    digest = hashlib.sha256(f"{np.shape(array)} {np.asarray(array[:1]).dtype}".encode())
    for i in sampled_rows(len(array)):
        digest.update(np.ascontiguousarray(array[i]).tobytes())
    return digest.hexdigest()[:16]


def names_fingerprint(names) -> str:
    """16 hex digits of a SHA-256 over a sequence of names, in order (``obs_names``: which rows, in which order)."""
    return hashlib.sha256("\x1f".join(map(str, names)).encode()).hexdigest()[:16]
