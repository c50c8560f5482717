"""The training data loaders: miniset batches for the geometry model, slide batches for the encoder.

Arrays in, torch batches out; no AnnData (see :ref:`gears-minisets` and :ref:`gears-encoder`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from gearsx.geometry._knn import tree_knn
from gearsx.geometry._minisets import MIN_MINISET, MinisetSampler
from gearsx.geometry._targets import adaptive_params, build_targets
from gearsx.module._geometry_losses import collate_targets

logger = logging.getLogger(__name__)

__all__ = ["VALIDATION", "GraphBatch", "MinisetBatches", "SlideBatches", "miniset_loaders", "validation_split"]


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
            self._knn_global = [tree_knn(s.tree, s.coords, k + 1)[1] for s in self.samplers]  # ties by index

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


class SlideBatches:
    """Batches of row indices drawn from one slide at a time, in a seeded random order.

    Keeping each batch within one slide matters: InfoNCE positives always come from the
    anchor's own slide, so with mixed batches the negatives of other slides would reward
    encoding slide identity. Each item is a whole batch: rows, one random physical
    neighbour per row as its positive, and the slide codes (vectorised, no per-row Python).
    """

    def __init__(self, x: np.ndarray, neighbours: np.ndarray, slides: np.ndarray, batch_size: int, seed: int) -> None:
        self.x, self.nbr, self.slides, self.batch_size = x, neighbours, slides, batch_size
        self.rng = np.random.default_rng(seed)
        self.groups = [np.flatnonzero(slides == s) for s in np.unique(slides)]

    def _batches(self) -> list[np.ndarray]:
        out = []
        for idx in self.groups:
            perm = self.rng.permutation(idx)
            n_full = max(1, len(perm) // self.batch_size)  # drop the ragged tail (re-drawn next epoch)
            out += [perm[i * self.batch_size : (i + 1) * self.batch_size] for i in range(n_full)]
        return [out[i] for i in self.rng.permutation(len(out))]

    def __len__(self) -> int:
        return sum(max(1, len(g) // self.batch_size) for g in self.groups)

    def __iter__(self):
        for b in self._batches():
            pos = self.nbr[b, self.rng.integers(self.nbr.shape[1], size=len(b))]
            yield {
                "x": torch.from_numpy(self.x[b]),
                "x_pos": torch.from_numpy(self.x[pos]),
                "slide": torch.from_numpy(self.slides[b]),
            }


class GraphBatch:
    """The whole graph as one batch, once per epoch: node features, their squared norm and the edge list ``src -> dst``."""

    def __init__(self, x: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.batch = {
            "x": x,
            "sq_norm": x.square().sum(),  # for the autoencoder's loss: once, not in every step
            "src": torch.from_numpy(np.asarray(src, dtype=np.int64)),
            "dst": torch.from_numpy(np.asarray(dst, dtype=np.int64)),
        }

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


def miniset_loaders(
    emb: np.ndarray,
    coords: np.ndarray,
    slides: np.ndarray,
    val_mask: np.ndarray,
    *,
    slide_names,
    batch_size: int,
    n_batches: int,
    kind: str,
    n_out: int,
    n_min: int,
    n_max: int,
    overlap,
    seed: int,
) -> tuple[MinisetBatches, MinisetBatches | None]:
    """Training and validation miniset loaders of the geometry model, split by ``val_mask``.

    Training draws fresh pairs of overlapping minisets every epoch; validation draws four fixed
    batches of four single minisets (``rw_stress`` targets), at most as large as the smallest
    validation slide. Raises a ``ValueError`` naming the slide when one has fewer training spots
    than ``n_min``, or fewer validation spots than the smallest miniset.
    """
    train_idx = np.flatnonzero(~val_mask)
    for s in np.unique(slides[train_idx]):
        count = int((slides[train_idx] == s).sum())
        if count < n_min:
            msg = (
                f"Slide {slide_names[s]!r} has {count} training spots, fewer than the miniset size n_min={n_min}. "
                "Lower `n_min`/`n_max`, or drop the slide."
            )
            raise ValueError(msg)
    v_idx = np.flatnonzero(val_mask)
    v_counts = {s: int((slides[v_idx] == s).sum()) for s in np.unique(slides[v_idx])}
    small = min(v_counts, key=v_counts.get) if v_counts else None
    if small is not None and v_counts[small] < MIN_MINISET:
        msg = (
            f"Slide {slide_names[small]!r} has {v_counts[small]} validation spots, fewer than the smallest miniset "
            f"({MIN_MINISET}). Pass validation=None (no validation), or validation='slide' with a larger "
            "`validation_slide`, or drop the slide."
        )
        raise ValueError(msg)
    loader = MinisetBatches(
        emb[train_idx],
        coords[train_idx],
        slides[train_idx],
        batch_size=batch_size,
        n_batches=n_batches,
        kind=kind,
        n_out=n_out,
        seed=seed,
        n_min=n_min,
        n_max=n_max,
        overlap=overlap,
    )
    if small is None:
        return loader, None
    v_max = min(n_max, v_counts[small])
    val_loader = MinisetBatches(
        emb[v_idx],
        coords[v_idx],
        slides[v_idx],
        batch_size=4,
        n_batches=4,
        kind="rw_stress",
        n_out=n_out,
        pairs=False,
        fixed=True,
        seed=seed + 1,
        n_min=min(n_min, v_max),
        n_max=v_max,
    )
    return loader, val_loader


#: What ``GEARS.train(validation=...)`` accepts.
VALIDATION = ("auto", "slide", "region", None)


def validation_split(
    validation, validation_slide, slides: np.ndarray, coords: np.ndarray, names: list[str], *, slide_key=None
) -> tuple[np.ndarray, str]:
    """Boolean validation mask of ``GEARS.train`` and a description of the split.

    ``'region'`` (and ``'auto'`` without ``validation_slide``) holds out the last 20% of each slide
    along its first principal axis (a contiguous band), so every slide trains; ``'slide'`` holds
    out a whole slide (``validation_slide``, default the last); ``None`` holds out nothing. With
    ``'auto'``, a slide whose band would hold fewer spots than the smallest miniset (a slide of
    fewer than about 40 spots) is not held out from; ``'region'`` makes that an error.
    """
    if validation not in VALIDATION:
        msg = f"`validation` must be one of {VALIDATION}; got {validation!r}."
        raise ValueError(msg)
    if validation is None:
        return np.zeros(len(slides), dtype=bool), "none"
    auto = validation == "auto" and validation_slide is None
    if validation == "auto":
        validation = "slide" if validation_slide is not None else "region"
    if validation == "slide":
        if len(names) < 2:
            msg = (
                "validation='slide' holds out a whole slide, but the data have a single slide "
                f"(slide_key={slide_key!r}). Use validation='region' or None."
            )
            raise ValueError(msg)
        name = names[-1] if validation_slide is None else str(validation_slide)
        if name not in names:
            msg = f"`validation_slide`={validation_slide!r} is not a slide; slides: {names}."
            raise ValueError(msg)
        return slides == names.index(name), f"slide {name}"
    # region: the last 20% of each slide along its first principal axis (a contiguous band)
    mask = np.zeros(len(slides), dtype=bool)
    kept = []  # 'auto': slides whose band would hold fewer spots than a miniset train on all of theirs
    for s in np.unique(slides):
        idx = np.flatnonzero(slides == s)
        xy = coords[idx] - coords[idx].mean(0)
        axis = np.linalg.svd(xy, full_matrices=False)[2][0]
        proj = xy @ axis
        band = idx[proj >= np.quantile(proj, 0.8)]
        if auto and len(band) < MIN_MINISET:
            kept.append(names[s])
            continue
        mask[band] = True
    if not kept:
        return mask, "region (20% band of each slide)"
    if not mask.any():
        split = f"none ('auto': every slide's 20% band holds fewer than {MIN_MINISET} spots)"
    else:
        split = f"region (20% band of each slide; {kept} train on all their spots: bands under {MIN_MINISET} spots)"
    logger.warning("GEARS: validation %s.", split)
    return mask, split
