"""Batches of minisets with their intrinsic targets, for training the geometry model (METHOD §4).

Arrays in, padded torch batches out; no AnnData.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from gearsx.geometry._losses import collate_targets
from gearsx.geometry._minisets import MinisetSampler
from gearsx.geometry._targets import adaptive_params, build_targets

__all__ = ["MinisetBatches"]


class MinisetBatches:
    """An iterable of padded miniset batches drawn from one or several slides.

    Each epoch (each ``iter()``) draws ``n_batches`` batches with a seed derived from
    ``(seed, epoch)``, so training is reproducible and every epoch sees new minisets.
    With ``pairs=True`` a batch holds ``batch_size`` pairs of overlapping minisets of
    one slide each (sets ``0..P-1`` and ``P..2P-1`` are partners), else ``batch_size``
    single minisets. A slide is chosen with probability proportional to its spot count.
    With ``fixed=True`` the batches are drawn once and reused (validation).

    What is cached: the per-slide KD-trees and, for ``kind='rw_stress'``, the
    full-slide kNN graph, so the miniset targets prefer true neighbours over points that
    only look close because the miniset skipped the spots between them. The targets
    themselves are built per miniset (a Gram factor costs an SVD of ``n x 2``; the
    random-walk targets ``O(n^3)``), which is cheaper than storing ``n x n`` operators.

    Parameters
    ----------
    embeddings
        ``(N, h)`` embeddings of all spots.
    coords
        ``(N, 2)`` spot coordinates.
    slides
        ``(N,)`` integer slide codes; minisets never mix slides.
    batch_size
        Pairs (or sets) per batch.
    n_batches
        Batches per epoch.
    kind
        Target kind (see :func:`gearsx.geometry.build_targets`).
    n_out
        Width of the Gram-factor target.
    sampler_kwargs
        ``n_min``, ``n_max``, ``overlap``, ``n_overlap_min`` of :class:`~gearsx.geometry.MinisetSampler`.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        coords: np.ndarray,
        slides: np.ndarray,
        *,
        batch_size: int = 4,
        n_batches: int = 32,
        kind: str = "gram",
        n_out: int = 32,
        pairs: bool = True,
        fixed: bool = False,
        seed: int = 0,
        **sampler_kwargs,
    ) -> None:
        self.emb = np.asarray(embeddings, dtype=np.float32)
        coords = np.asarray(coords, dtype=np.float64)
        slides = np.asarray(slides)
        self.rows = [np.flatnonzero(slides == s) for s in np.unique(slides)]
        self.samplers = [MinisetSampler(coords[r], **sampler_kwargs) for r in self.rows]
        sizes = np.array([len(r) for r in self.rows], dtype=float)
        self.p_slide = sizes / sizes.sum()
        self.batch_size, self.n_batches = int(batch_size), int(n_batches)
        self.kind, self.n_out, self.pairs, self.fixed, self.seed = kind, int(n_out), pairs, fixed, int(seed)
        self.epoch = 0
        self._cache: list[dict] | None = None
        self._knn_global = None
        if kind == "rw_stress":
            k = adaptive_params(max(s.n_max for s in self.samplers))["k"]
            self._knn_global = [cKDTree(s.coords).query(s.coords, k=min(k + 1, s.n_spots))[1] for s in self.samplers]

    def __len__(self) -> int:
        return self.n_batches

    def _targets(self, slide: int, local: np.ndarray, rng: np.random.Generator):
        sampler = self.samplers[slide]
        knn_global = None
        if self._knn_global is not None:
            pos = np.full(sampler.n_spots, -1, dtype=np.int64)
            pos[local] = np.arange(len(local))
            knn_global = pos[self._knn_global[slide][local]]
        return build_targets(
            sampler.coords[local], kind=self.kind, knn_global=knn_global, random_state=int(rng.integers(2**31))
        )

    def _batch(self, rng: np.random.Generator) -> dict:
        first, second, shared = [], [], []
        for s in rng.choice(len(self.samplers), size=self.batch_size, p=self.p_slide):
            if self.pairs:
                pair = self.samplers[s].sample_pair(rng)
                first.append((s, pair.idx_a))
                second.append((s, pair.idx_b))
                shared.append((pair.shared_a, pair.shared_b))
            else:
                first.append((s, self.samplers[s].sample(rng)))
        sets = first + second  # partners go second: sets i and i + P form pair i
        targets = [self._targets(s, local, rng) for s, local in sets]
        n = max(len(local) for _, local in sets)
        h = np.zeros((len(sets), n, self.emb.shape[1]), dtype=np.float32)
        factor = np.zeros((len(sets), n, self.n_out), dtype=np.float32)
        rows = []
        for i, ((s, local), t) in enumerate(zip(sets, targets, strict=True)):
            r = self.rows[s][local]
            rows.append(r)
            h[i, : len(r)] = self.emb[r]
            width = min(self.n_out, t.gram_factor.shape[1])
            factor[i, : len(r), :width] = t.gram_factor[:, :width]
        batch = {
            "h": torch.from_numpy(h),
            "targets": collate_targets(targets, dtype=torch.float32),
            "factor": torch.from_numpy(factor),
            "rows": rows,
            "pairs": None,
        }
        if shared:
            m = max(len(a) for a, _ in shared)
            sa, sb = np.zeros((len(shared), m), dtype=np.int64), np.zeros((len(shared), m), dtype=np.int64)
            sm = np.zeros((len(shared), m), dtype=bool)
            for i, (a, b) in enumerate(shared):
                sa[i, : len(a)], sb[i, : len(b)], sm[i, : len(a)] = a, b, True
            batch["pairs"] = {
                "shared_a": torch.from_numpy(sa),
                "shared_b": torch.from_numpy(sb),
                "shared_mask": torch.from_numpy(sm),
            }
        return batch

    def __iter__(self):
        if self.fixed:
            if self._cache is None:
                rng = np.random.default_rng([self.seed, 0])
                self._cache = [self._batch(rng) for _ in range(self.n_batches)]
            yield from self._cache
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for _ in range(self.n_batches):
            yield self._batch(rng)
