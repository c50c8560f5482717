"""Batched, masked torch losses of the geometry model (see :ref:`gears-geometry-model`) on ``d``-dimensional set outputs.

All functions take predictions ``(B, n, d)`` with a validity ``mask`` ``(B, n)`` and
average over valid points and over the batch. They complement :mod:`._losses`
(``L_geo``, Gram): Procrustes-aligned factor regression, log-scale match, NCA-style
neighbour loss, log-distance loss on neighbour edges and overlap consistency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._geometry_losses import _pairwise_sq, masked_gauge_fix

if TYPE_CHECKING:
    import torch

__all__ = [
    "align_to",
    "factor_regression_loss",
    "knn_edge_loss",
    "log_scale_loss",
    "masked_center",
    "masked_rms",
    "nca_knn_loss",
    "overlap_gram_loss",
    "target_knn",
]


def masked_center(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subtract each set's mean over its valid points; padding set to 0."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x - (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)) * m


def masked_rms(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Root-mean-square row norm of each (already centred) set, shape ``(B,)``."""
    import torch

    m = mask.to(x.dtype)
    return torch.sqrt(((x**2).sum(-1) * m).sum(1) / m.sum(1).clamp_min(1.0)).clamp_min(1e-8)


def align_to(source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rotate/reflect each set of ``source`` onto ``target`` (orthogonal Procrustes, no gradient through the fit).

    Both are ``(B, n, d)`` and should be centred; returns ``source @ R`` per set.
    """
    import torch

    m = mask.unsqueeze(-1).to(source.dtype)
    with torch.no_grad():
        u, _, vt = torch.linalg.svd((source * m).transpose(1, 2) @ (target * m))
        rot = u @ vt
    return source @ rot


def factor_regression_loss(pred: torch.Tensor, factor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Relative squared error between ``pred`` and the target factor aligned to it by Procrustes.

    ``mean_i ||pred_i - (V R)_i||^2 / mean_i ||V_i||^2``; zero exactly when ``pred`` is
    an orthogonal transform of the (centred) target factor ``V``.
    """
    m = mask.to(pred.dtype)
    p = masked_center(pred, mask)
    v = masked_center(factor, mask)
    aligned = align_to(v, p, mask)
    err = (((p - aligned) ** 2).sum(-1) * m).sum(1)
    return (err / ((v**2).sum(-1) * m).sum(1).clamp_min(1e-12)).mean()


def log_scale_loss(pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(log rms(pred) - log rms(ref))^2`` of centred sets: the log-trace scale loss up to a factor 4."""
    import torch

    lp = torch.log(masked_rms(masked_center(pred, mask), mask))
    lr = torch.log(masked_rms(masked_center(ref, mask), mask))
    return ((lp - lr) ** 2).mean()


def target_knn(coords: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Return the indices ``(B, n, k)`` of each point's ``k`` nearest valid neighbours (self excluded) in ``coords``."""
    import torch

    n = coords.shape[1]
    d2 = _pairwise_sq(coords)
    invalid = ~mask.unsqueeze(1) | torch.eye(n, dtype=torch.bool, device=coords.device)
    d2 = d2.masked_fill(invalid, float("inf"))
    return torch.topk(d2, k=min(k, n - 1), dim=-1, largest=False).indices


def nca_knn_loss(
    pred: torch.Tensor, knn: torch.Tensor, mask: torch.Tensor, *, temperature: float = 0.1
) -> torch.Tensor:
    """NCA-style neighbour loss ``-mean_i log sum_{j in kNN(i)} p_ij``.

    ``p_ij = softmax_j(-||x_i - x_j||^2 / (t * s_i))`` over the valid points ``j != i`` of
    the gauge-fixed prediction, where ``s_i`` is the mean squared distance from ``i`` to
    its true neighbours (detached) so the softmax is scale-free. ``knn`` are the
    target neighbours (:func:`target_knn`).
    """
    import torch

    x = masked_gauge_fix(pred, mask)
    n = x.shape[1]
    d2 = _pairwise_sq(x)
    near = torch.gather(d2, 2, knn)
    scale = near.mean(-1, keepdim=True).detach().clamp_min(1e-8)
    logits = -d2 / (temperature * scale)
    invalid = ~mask.unsqueeze(1) | torch.eye(n, dtype=torch.bool, device=x.device)
    log_p = torch.log_softmax(logits.masked_fill(invalid, float("-inf")), dim=-1)
    hit = torch.logsumexp(torch.gather(log_p, 2, knn), dim=-1)
    m = mask.to(x.dtype)
    return (-(hit * m).sum(1) / m.sum(1).clamp_min(1.0)).mean()


def knn_edge_loss(pred: torch.Tensor, coords: torch.Tensor, knn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared log-ratio of predicted to true distances on the target's kNN edges (both gauge-fixed)."""
    import torch

    x, y = masked_gauge_fix(pred, mask), masked_gauge_fix(coords, mask)
    b = torch.arange(x.shape[0], device=x.device)[:, None, None]
    i = torch.arange(x.shape[1], device=x.device)[None, :, None]
    dx = ((x[b, i] - x[b, knn]) ** 2).sum(-1).clamp_min(1e-16)
    dy = ((y[b, i] - y[b, knn]) ** 2).sum(-1).clamp_min(1e-16)
    r = (0.5 * torch.log(dx / dy)) ** 2
    m = mask.to(x.dtype)
    return ((r.mean(-1) * m).sum(1) / m.sum(1).clamp_min(1.0)).mean()


def overlap_gram_loss(
    x_a: torch.Tensor, x_b: torch.Tensor, shared_a: torch.Tensor, shared_b: torch.Tensor, shared_mask: torch.Tensor
) -> torch.Tensor:
    """Consistency of two predictions on their shared points: relative Gram difference after gauge fixing.

    ``x_a``, ``x_b`` are ``(B, n, d)``; ``shared_a``/``shared_b`` ``(B, m)`` give the
    positions of the same points in each, ``shared_mask`` ``(B, m)`` their validity.
    Rotation-, reflection-, translation- and scale-invariant; returns one value per pair ``(B,)``.
    """
    import torch

    b = torch.arange(x_a.shape[0], device=x_a.device)[:, None]
    pa = masked_gauge_fix(x_a[b, shared_a], shared_mask)
    pb = masked_gauge_fix(x_b[b, shared_b], shared_mask)
    ga, gb = pa @ pa.transpose(1, 2), pb @ pb.transpose(1, 2)
    return ((ga - gb) ** 2).sum((1, 2)) / ((ga**2).sum((1, 2)) + (gb**2).sum((1, 2))).clamp_min(1e-12)
