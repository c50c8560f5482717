from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gearsx._anndata import check_key_added, set_obs_rep, write_record
from gearsx._keys import Key
from gearsx._settings import settings
from gearsx._utils import (
    array_fingerprint,
    check_positive_int,
    checks_flags,
    module_fingerprint,
    names_fingerprint,
    progress_bar,
    renamed_arguments,
    resolve_device,
    sampled_rows,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from anndata import AnnData

__all__ = ["embed_patches"]

logger = logging.getLogger(__name__)


class _TileDataset:
    """Map-style dataset over an array-like of tiles ``(n, h, w, c)`` -> float tensors ``(c, h, w)``."""

    def __init__(self, tiles, transform) -> None:
        self.tiles, self.transform = tiles, transform

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i):
        import torch

        tile = np.asarray(self.tiles[i])
        t = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1))).float()
        if tile.dtype == np.uint8:
            t = t / 255.0
        return self.transform(t) if self.transform is not None else t


@renamed_arguments(device="accelerator")
@checks_flags
def embed_patches(
    adata: AnnData,
    encoder: torch.nn.Module,
    *,
    patches: np.ndarray | None = None,
    patches_key: str = Key.patches,
    batch_size: int = 64,
    accelerator: str = "auto",
    transform: Callable | None = None,
    cache: str | Path | None = None,
    key_added: str = Key.image,
    progress: bool | None = None,
) -> None:
    """Embed histology tiles with any torch image model and write ``obsm[key_added]``.

    Tiles come from :func:`gearsx.pp.extract_patches` (``uns[patches_key]['path']``) or
    from ``patches``. Each tile becomes a float tensor ``(channels, size, size)``
    (``uint8`` scaled to ``[0, 1]``; float tiles must already lie in ``[0, 1]``, other types are an
    error), ``transform`` is applied (e.g. the model's
    normalisation), and batches run through ``encoder`` in evaluation mode under
    :func:`torch.inference_mode` with a progress bar. Outputs are flattened per tile.

    Embeddings are stored raw (not normalised): normalise them after loading, so that a
    cache never bakes in one normalisation.

    Parameters
    ----------
    adata
        Annotated data matrix with one tile per observation.
    encoder
        A :class:`torch.nn.Module` mapping ``(B, C, H, W)`` to ``(B, ...)``.
    patches
        Array-like of tiles ``(n_obs, size, size, channels)``; default: the file recorded
        by :func:`gearsx.pp.extract_patches`.
    patches_key
        ``uns`` key written by :func:`gearsx.pp.extract_patches`.
    batch_size
        Tiles per batch.
    accelerator
        ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'`` or ``'mps'``.
    transform
        Callable applied to each tile tensor.
    cache
        ``.npy`` file of raw embeddings, with a ``.npy.json`` record beside it of what made them (the
        encoder's weights, the tiles, the transform's ``repr``): reused when both exist and the record
        matches this call, otherwise (re)computed and written, with a warning saying why. The
        ``repr`` of a plain function does not show its body: change the cache file when you change
        such a transform.
    key_added
        ``obsm`` key of the embeddings.
    progress
        Show a progress bar (default ``gx.settings.progress_bar``).

    Returns
    -------
    ``None``; writes ``obsm[key_added]`` (float32 ``(n_obs, dim)``) and ``uns[key_added]`` (parameters).

    Examples
    --------
    >>> import numpy as np, anndata as ad, torch, gearsx as gx
    >>> adata = ad.AnnData(np.zeros((4, 1), dtype=np.float32))
    >>> tiles = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    >>> gx.tl.embed_patches(adata, torch.nn.Flatten(), patches=tiles, progress=False)
    >>> adata.obsm["X_image"].shape
    (4, 768)
    """
    import torch
    from torch.utils.data import DataLoader

    check_key_added(key_added)
    batch_size = check_positive_int(batch_size, name="batch_size")
    if patches is None:
        if patches_key not in adata.uns or "path" not in adata.uns[patches_key]:
            msg = f"No tiles: `adata.uns[{patches_key!r}]` is missing. Run gx.pp.extract_patches first or pass `patches=`."
            raise KeyError(msg)
        record = adata.uns[patches_key]
        patches = np.load(record["path"], mmap_mode="r")
        cut_for = record.get("obs_names")
        if cut_for is not None and len(patches) == adata.n_obs and cut_for != names_fingerprint(adata.obs_names):
            msg = (
                f"The tiles recorded in `adata.uns[{patches_key!r}]` were cut for other spots or another order of "
                "them (`obs_names` differ since `gx.pp.extract_patches` ran): each tile would describe another "
                "spot. Run gx.pp.extract_patches again on this AnnData."
            )
            raise ValueError(msg)
    if len(patches) != adata.n_obs:
        msg = f"`patches` holds {len(patches)} tiles for {adata.n_obs} observations; they must match."
        raise ValueError(msg)
    if np.ndim(patches) != 4:
        msg = f"`patches` must have shape (n_obs, size, size, channels); got {np.shape(patches)}."
        raise ValueError(msg)
    _check_tile_values(patches)
    cache = Path(cache) if cache is not None else None
    made_by = _cache_key(encoder, patches, transform)
    if cache is not None and cache.exists():
        emb = _cached(cache, made_by, adata.n_obs)
        if emb is not None:
            logger.info("loaded cached embeddings from %s", cache)
            set_obs_rep(adata, emb.astype(np.float32, copy=False), obsm=key_added)
            write_record(adata, key_added, {"cache": str(cache), "from_cache": True, **made_by})
            return
    dev = resolve_device(accelerator)
    encoder = encoder.to(dev).eval()
    loader = DataLoader(_TileDataset(patches, transform), batch_size=batch_size, shuffle=False)
    show = settings.progress_bar if progress is None else progress
    chunks = []
    with torch.inference_mode():
        for batch in progress_bar(loader, desc="embedding tiles", enabled=show, unit="batch"):
            chunks.append(encoder(batch.to(dev)).reshape(len(batch), -1).float().cpu().numpy())
    emb = np.concatenate(chunks)
    if not np.isfinite(emb).all():
        msg = "The encoder produced NaN or inf embeddings; check its input normalisation (`transform`)."
        raise ValueError(msg)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, emb)
        _cache_record(cache).write_text(json.dumps(made_by, indent=1))
    set_obs_rep(adata, emb, obsm=key_added)
    params = {"encoder": type(encoder).__name__, "batch_size": batch_size, "device": str(dev)}
    write_record(adata, key_added, {**params, "cache": str(cache) if cache else "", "from_cache": False, **made_by})


def _check_tile_values(patches) -> None:
    """Refuse tiles whose values the ``[0, 1]`` scaling would get wrong (checked on a sample of tiles).

    ``uint8`` tiles are divided by 255 and float tiles are taken as they are, so a float image in
    0-255 or a 16-bit image would reach the encoder 255 or 65,535 times too bright, with no error.
    """
    dtype = np.asarray(patches[:1]).dtype
    if dtype == np.uint8:
        return
    if not np.issubdtype(dtype, np.floating):
        msg = (
            f"`patches` are {dtype} tiles; only uint8 tiles (0-255) are scaled to [0, 1]. Convert them, e.g. "
            "`(tiles / tiles.max()).astype(np.float32)` for a 16-bit image, or `img_as_ubyte` from scikit-image."
        )
        raise ValueError(msg)
    sample = np.asarray(patches[sampled_rows(len(patches))])
    top = float(np.nanmax(sample)) if sample.size else 0.0
    if top > 1.0 + 1e-3:
        msg = (
            f"`patches` are float tiles with values up to {top:.4g}; float tiles must lie in [0, 1] (uint8 tiles "
            "are scaled by gearsx). Pass `tiles / 255` (or the image as uint8) to `gx.pp.extract_patches` or here."
        )
        raise ValueError(msg)


#: The parts of a cache's record, as a warning names them when they differ.
_MADE_BY = {"encoder_id": "other encoder weights", "tiles_id": "other tiles", "transform": "another transform"}


def _cache_key(encoder, patches, transform) -> dict:
    """Describe what makes a set of embeddings: the encoder's weights, the tiles and the transform (its repr)."""
    made = repr(transform) if transform is not None else ""
    return {
        "encoder_id": module_fingerprint(encoder),
        "tiles_id": array_fingerprint(patches),
        "transform": re.sub(r" at 0x[0-9a-fA-F]+", "", made),  # no memory addresses: equal across sessions
    }


def _cache_record(cache: Path) -> Path:
    """Return the JSON file beside a cache that records what made it."""
    return cache.with_name(cache.name + ".json")


def _cached(cache: Path, made_by: dict, n_obs: int) -> np.ndarray | None:
    """Return the cached embeddings if ``made_by`` made them for ``n_obs`` tiles, else ``None`` (with a warning)."""
    emb = np.load(cache, mmap_mode="r")
    record = _cache_record(cache)
    stored = json.loads(record.read_text()) if record.exists() else None
    if emb.shape[0] != n_obs:
        why = f"it has {emb.shape[0]} rows, not {n_obs}"
    elif stored is None:
        why = f"no record of what made it ({record.name} is missing)"
    elif stored != made_by:
        differ = [label for k, label in _MADE_BY.items() if stored.get(k) != made_by[k]]
        why = f"it was made with {' and '.join(differ)}"
    else:
        return np.array(emb)  # in memory: a view of the mapped file would break when the cache is rewritten
    logger.warning("not using the cache %s: %s; recomputing and overwriting it", cache, why)
    return None
