"""Locality-weighted miniset sampling on one slide (see :ref:`gears-minisets`). Numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from gearsx._utils import as_rng, check_coords, check_positive_int, check_positive_number

from ._knn import tree_knn

__all__ = ["MinisetSampler"]


@dataclass
class MinisetPair:
    """Two overlapping minisets of one slide (global row indices) and where their shared points sit."""

    idx_a: np.ndarray
    idx_b: np.ndarray
    shared_a: np.ndarray  # positions of the shared points in idx_a
    shared_b: np.ndarray  # positions of the same points in idx_b


#: The smallest miniset (spots) the sampler draws: fewer give no distances worth learning from.
MIN_MINISET = 8


class MinisetSampler:
    """Draw minisets and overlapping miniset pairs from the spots of one slide.

    A miniset of size ``n`` is drawn around a random centre spot ``c``: the other
    spots are drawn without replacement with probability proportional to
    ``exp(-d(i, c) / tau)``. The candidates are the ``pool_factor * n`` spots nearest
    to ``c`` (a KD-tree query, so a draw costs ``O(n log N)`` rather than ``O(N)``),
    and ``tau`` is the median candidate distance, so the weighting adapts to the
    miniset size and the spot density without a unit-dependent parameter.

    A pair shares ``max(n_overlap_min, floor(overlap * n))`` spots: the second
    miniset is centred on a spot of the first, keeps the shared spots (the first
    miniset's spots nearest that centre) and is filled up like a single miniset.

    Parameters
    ----------
    coords
        Spot coordinates of the slide, ``(N, 2)``.
    n_min, n_max
        Miniset sizes are uniform on ``[n_min, n_max]`` (clipped to the slide size).
    pool_factor
        Candidate pool size relative to ``n`` (at least ``1``; at ``1`` a miniset is its centre's
        ``n - 1`` nearest spots, with no draw).
    overlap, n_overlap_min
        Size of the shared index set of a pair (``overlap`` in ``(0, 1)``, ``n_overlap_min`` at
        least ``1``).

    Examples
    --------
    >>> import numpy as np
    >>> from gearsx.geometry import MinisetSampler
    >>> xy = np.random.default_rng(0).uniform(size=(2000, 2))
    >>> s = MinisetSampler(xy, n_min=128, n_max=256)
    >>> pair = s.sample_pair(np.random.default_rng(1))
    >>> bool((pair.idx_a[pair.shared_a] == pair.idx_b[pair.shared_b]).all())
    True
    """

    def __init__(
        self,
        coords: np.ndarray,
        *,
        n_min: int = 128,
        n_max: int = 384,
        pool_factor: float = 3.0,
        overlap: float = 0.5,
        n_overlap_min: int = 32,
    ) -> None:
        self.coords = check_coords(coords, name="coords", min_points=3)
        n_min = check_positive_int(n_min, name="n_min", minimum=MIN_MINISET)
        n_max = check_positive_int(n_max, name="n_max", minimum=MIN_MINISET)
        if n_min > n_max:
            msg = f"`n_min`={n_min} must not exceed `n_max`={n_max}."
            raise ValueError(msg)
        if n_min > len(self.coords):
            msg = (
                f"The slide has {len(self.coords)} spots, fewer than the miniset size n_min={n_min}. "
                "Lower `n_min`/`n_max` or leave this slide out."
            )
            raise ValueError(msg)
        if not 0.0 < overlap < 1.0:
            msg = f"`overlap` must be in (0, 1); got {overlap}."
            raise ValueError(msg)
        pool_factor = check_positive_number(pool_factor, name="pool_factor")
        if pool_factor < 1.0:  # fewer candidates than the miniset needs: every draw would fail
            msg = (
                f"`pool_factor` must be >= 1: a miniset of n spots is drawn from its centre's "
                f"pool_factor * n nearest spots; got {pool_factor:g}."
            )
            raise ValueError(msg)
        # at least one shared spot: with 0 and a small `overlap`, a pair could share none and have no overlap to align
        n_overlap_min = check_positive_int(n_overlap_min, name="n_overlap_min")
        self.n_min, self.n_max = n_min, min(n_max, len(self.coords))
        self.pool_factor = pool_factor
        self.overlap, self.n_overlap_min = float(overlap), n_overlap_min
        self.tree = cKDTree(self.coords)

    @property
    def n_spots(self) -> int:
        """Number of spots of the slide."""
        return len(self.coords)

    def _size(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.n_min, self.n_max + 1))

    def _draw(self, center: int, n: int, rng: np.random.Generator, exclude: np.ndarray | None = None) -> np.ndarray:
        """``n`` spots around ``center`` (centre first), none of ``exclude``."""
        n_pool = min(self.n_spots, int(np.ceil(self.pool_factor * n)) + (0 if exclude is None else len(exclude)))
        # ties by index, so a seed draws the same spots in any units and at any origin (lattices)
        dist, idx = (a[0] for a in tree_knn(self.tree, self.coords[center][None], n_pool))
        keep = idx != center
        if exclude is not None:
            keep &= ~np.isin(idx, exclude)
        dist, idx = dist[keep], idx[keep]
        if len(idx) < n - 1:
            msg = f"Cannot draw a miniset of {n} spots: only {len(idx) + 1} candidates."
            raise ValueError(msg)
        tau = max(float(np.median(dist)), 1e-12)
        w = np.exp(-(dist - dist.min()) / tau)
        chosen = rng.choice(idx, size=n - 1, replace=False, p=w / w.sum())
        return np.concatenate([[center], chosen]).astype(np.int64)

    def sample(self, rng: int | np.random.Generator | None = None, *, n: int | None = None) -> np.ndarray:
        """Row indices of one miniset (size ``n``, default uniform on ``[n_min, n_max]``).

        Parameters
        ----------
        rng
            A seed or :class:`numpy.random.Generator`.
        n
            Size of the miniset (capped at the slide's spots); default a uniform draw.

        Returns
        -------
        ``(n,)`` row indices into the sampler's spots.
        """
        rng = as_rng(rng)
        n = self._size(rng) if n is None else min(int(n), self.n_spots)
        return self._draw(int(rng.integers(self.n_spots)), n, rng)

    def sample_pair(self, rng: int | np.random.Generator | None = None) -> MinisetPair:
        """Two overlapping minisets (see the class description).

        Parameters
        ----------
        rng
            A seed or :class:`numpy.random.Generator`.

        Returns
        -------
        A :class:`~gearsx.geometry.MinisetPair`.
        """
        rng = as_rng(rng)
        idx_a = self.sample(rng)
        n_b = self._size(rng)
        n_ov = min(max(self.n_overlap_min, int(np.floor(self.overlap * min(len(idx_a), n_b)))), len(idx_a), n_b)
        center_b = int(idx_a[rng.integers(len(idx_a))])
        # The shared spots: the first miniset's spots nearest the second centre.
        d = np.linalg.norm(self.coords[idx_a] - self.coords[center_b], axis=1)
        shared_pos_a = np.argsort(d, kind="stable")[:n_ov]
        shared = idx_a[shared_pos_a]
        n_fill = n_b - n_ov
        if n_fill > 0 and self.n_spots - len(idx_a) >= n_fill:
            fill = self._draw(center_b, n_fill + 1, rng, exclude=idx_a)[1:]
        else:  # a slide too small to fill the second miniset with new spots: reuse the first's
            rest = np.setdiff1d(idx_a, shared)
            fill = rng.choice(rest, size=min(n_fill, len(rest)), replace=False)
        order = rng.permutation(n_ov + len(fill))
        idx_b = np.concatenate([shared, fill])[order]
        shared_pos_b = np.argsort(order)[:n_ov]  # where each shared spot landed in idx_b
        return MinisetPair(idx_a=idx_a, idx_b=idx_b, shared_a=shared_pos_a, shared_b=shared_pos_b)
