"""Patch prediction of a GEARS module: in process, or as tasks on a :mod:`dask.distributed` cluster.

The core, :func:`predict_sets`, is a plain function of the torch module and the embeddings of the
sets, so that the same code runs in this process and on a dask worker: that is what makes the two
paths give the same coordinates (at the same torch thread count).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["predict_patches", "predict_sets"]

logger = logging.getLogger(__name__)

#: Patch chunks in flight per worker thread on a cluster (bounds the memory of a streamed prediction).
_IN_FLIGHT_PER_THREAD = 2


def predict_sets(
    module,
    emb: np.ndarray,
    sets: Sequence[np.ndarray],
    *,
    refine_steps: int = 4,
    sigma_start: float = 1.0,
    n_components: int = 2,
    batch_size: int = 16,
    random_state: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predict the geometry of every index set of ``emb`` with ``module`` (refined and generator-only).

    Sets are sorted by size and padded in batches of ``batch_size``; the refinement noise comes
    from one generator seeded with ``random_state``. Runs on the module's device.
    """
    import torch

    from gearsx.module import principal_coords

    width = emb.shape[1]
    order = np.argsort([len(s) for s in sets], kind="stable")
    out: list = [None] * len(sets)
    base: list = [None] * len(sets)
    dev = next(module.parameters()).device
    gen = torch.Generator().manual_seed(int(random_state))
    module.eval()
    with torch.inference_mode():
        for start in range(0, len(sets), batch_size):
            chunk = order[start : start + batch_size]
            n = max(len(sets[i]) for i in chunk)
            h = np.zeros((len(chunk), n, width), dtype=np.float32)
            mask = np.zeros((len(chunk), n), dtype=bool)
            for j, i in enumerate(chunk):
                h[j, : len(sets[i])] = emb[sets[i]]
                mask[j, : len(sets[i])] = True
            ht, mt = torch.as_tensor(h, device=dev), torch.as_tensor(mask, device=dev)
            v, vb = module(ht, mt, refine_steps=refine_steps, sigma_start=sigma_start, generator=gen)
            xy = principal_coords(v, mt, n_components).double().cpu().numpy()
            # without a refiner the module returns the generator's proposal itself: its axes are those just taken
            xb = xy.copy() if vb is v else principal_coords(vb, mt, n_components).double().cpu().numpy()
            for j, i in enumerate(chunk):
                out[i], base[i] = xy[j, : len(sets[i])], xb[j, : len(sets[i])]
    return out, base


def _local(emb: np.ndarray, part: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return the rows of ``emb`` that a chunk of patches touches, and the patches re-indexed into them."""
    cells = np.unique(np.concatenate(part))
    return emb[cells], [np.searchsorted(cells, p) for p in part]


def _predict_chunk(module, rows: np.ndarray, sets: list[np.ndarray], kwargs: dict) -> list[np.ndarray]:
    """Predict one chunk of patches (one task; ``rows`` holds only the cells they hold).

    A task runs torch with its worker's thread count (dask starts worker processes with
    ``OMP_NUM_THREADS=1``), so the workers never oversubscribe the cores. Torch's float reductions
    depend on that count: the coordinates equal those of an in-process run with as many threads.
    """
    return predict_sets(module, rows, sets, **kwargs)[0]


def predict_patches(
    module,
    emb: np.ndarray,
    patches: Sequence[np.ndarray],
    *,
    refine_steps: int = 4,
    batch_size: int = 16,
    random_state: int = 0,
    client=None,
    bar=None,
) -> list[np.ndarray]:
    """Predict many patches in chunks of ``4 * batch_size``, in process or on ``client``'s workers.

    Chunk ``c`` (patches ``c * 4 * batch_size`` onwards) is seeded with ``random_state`` plus its first
    patch's position, so both paths draw the same refinement noise. On a cluster the module
    (moved to the CPU) is scattered to every worker once, and each task ships only the embeddings
    of the cells its chunk holds; at most two chunks per worker thread are in flight, so the
    embeddings of all cells never travel at once. Each task uses its worker's torch threads, so the
    coordinates equal the in-process ones when the calling process runs as many
    (``torch.set_num_threads``; see :func:`_predict_chunk`).
    """
    chunk = batch_size * 4
    kwargs = {"refine_steps": refine_steps, "batch_size": batch_size}
    starts = list(range(0, len(patches), chunk))
    if client is None:
        coords: list[np.ndarray] = []
        for start in starts:
            part = patches[start : start + chunk]  # in process: index the embeddings directly, no re-indexing
            coords += _predict_chunk(module, emb, list(part), {**kwargs, "random_state": random_state + start})
            if bar is not None:
                bar.update(len(part))
        return coords
    from itertools import islice

    from distributed import as_completed

    cpu_module = copy.deepcopy(module).cpu()
    [module_future] = client.scatter([cpu_module], broadcast=True)
    n_threads = max(1, sum(client.nthreads().values()))
    results: dict[int, list[np.ndarray]] = {}
    start_of: dict[str, int] = {}
    pending = iter(starts)

    def submit(start: int):
        part = patches[start : start + chunk]
        rows, local = _local(emb, part)
        fut = client.submit(
            _predict_chunk, module_future, rows, local, {**kwargs, "random_state": random_state + start}, pure=False
        )
        start_of[fut.key] = start
        return fut

    window = as_completed([submit(s) for s in islice(pending, _IN_FLIGHT_PER_THREAD * n_threads)])
    for fut in window:
        start = start_of.pop(fut.key)
        results[start] = fut.result()
        if bar is not None:
            bar.update(len(results[start]))
        nxt = next(pending, None)
        if nxt is not None:
            window.add(submit(nxt))
        fut.release()
    logger.info("predicted %d patches in %d tasks on %d worker threads", len(patches), len(starts), n_threads)
    return [xy for start in starts for xy in results[start]]
