"""Block-averaged distance distortion between a predicted and a true layout (for heatmaps)."""

from __future__ import annotations

import numpy as np

from gearsx._utils import as_rng, check_coords, check_positive_int, check_positive_number
from gearsx.geometry._order import morton_order

from ._evaluation import check_has_geometry

__all__ = ["distortion_matrix", "morton_order"]


def distortion_matrix(
    X_pred: np.ndarray,
    X_gt: np.ndarray,
    *,
    n_blocks: int = 64,
    n_per_block: int = 32,
    eps: float = 1e-3,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean log-distance distortion between blocks of cells ordered along the true layout.

    Cells are put in Morton order of ``X_gt`` and cut into ``n_blocks`` contiguous
    blocks. For every pair of blocks, ``|log((s D_hat + e) / (D + e))|`` is averaged over
    up to ``n_per_block x n_per_block`` cell pairs, where ``D`` and ``D_hat`` are true and
    predicted distances, ``s`` is the optimal global scale (median log-ratio over all
    sampled pairs) and ``e = eps * median(D)``. Memory and time are
    ``O((n_blocks * n_per_block)^2)``, independent of the number of cells, so it never
    forms an ``N x N`` matrix.

    Parameters
    ----------
    X_pred, X_gt
        Predicted and true coordinates, ``(N, d)``.
    n_blocks
        Blocks along the Morton order (capped at ``N``).
    n_per_block
        Cells sampled per block.
    eps
        Relative floor of distances.
    random_state
        Seed of the within-block samples.

    Returns
    -------
    The ``(n_blocks, n_blocks)`` matrix (0 for a perfect reconstruction up to
    similarity), and the Morton order of the cells.

    Examples
    --------
    >>> import numpy as np, gearsx as gx
    >>> x = np.random.default_rng(0).uniform(size=(500, 2))
    >>> m, _ = gx.metrics.distortion_matrix(3 * x[:, ::-1], x, n_blocks=8)
    >>> float(m.max()) < 1e-9
    True
    """
    pred = check_coords(X_pred, name="X_pred")
    gt = check_coords(X_gt, name="X_gt")
    if len(pred) != len(gt):
        msg = f"`X_pred` and `X_gt` must have the same rows; got {len(pred)} and {len(gt)}."
        raise ValueError(msg)
    check_has_geometry(gt, name="X_gt")
    n_blocks = min(check_positive_int(n_blocks, name="n_blocks"), len(gt))
    n_per_block = check_positive_int(n_per_block, name="n_per_block")
    eps = check_positive_number(eps, name="eps")  # 0 or less: log(0) for coincident points
    rng = as_rng(random_state)
    order = morton_order(gt)
    blocks = np.array_split(order, n_blocks)
    sample = [b if len(b) <= n_per_block else rng.choice(b, n_per_block, replace=False) for b in blocks]
    idx = np.concatenate(sample)
    owner = np.repeat(np.arange(n_blocks), [len(s) for s in sample])
    d = np.linalg.norm(gt[idx, None] - gt[None, idx], axis=-1)
    dh = np.linalg.norm(pred[idx, None] - pred[None, idx], axis=-1)
    off = ~np.eye(len(idx), dtype=bool) & (d > 0) & (dh > 0)
    scale = float(np.exp(np.median(np.log(d[off]) - np.log(dh[off])))) if off.any() else 1.0
    e = eps * float(np.median(d[off])) if off.any() else eps
    dist = np.abs(np.log((scale * dh + e) / (d + e)))
    np.fill_diagonal(dist, np.nan)
    out = np.zeros((n_blocks, n_blocks))
    cnt = np.zeros((n_blocks, n_blocks))
    valid = ~np.isnan(dist)
    np.add.at(out, (owner[:, None].repeat(len(idx), 1)[valid], owner[None, :].repeat(len(idx), 0)[valid]), dist[valid])
    np.add.at(cnt, (owner[:, None].repeat(len(idx), 1)[valid], owner[None, :].repeat(len(idx), 0)[valid]), 1)
    return out / np.maximum(cnt, 1), order
