"""Representation-learning and distribution-alignment losses (torch, no AnnData)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["coral_loss", "info_nce", "mmd_rbf", "vicreg"]


def vicreg(z1: torch.Tensor, z2: torch.Tensor, *, gamma: float = 1.0, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """VICReg terms of two views: invariance (MSE), variance (hinge on std at ``gamma``), covariance.

    Returns ``{'invariance', 'variance', 'covariance'}`` (unweighted).
    """
    inv = F.mse_loss(z1, z2)
    var, cov = z1.new_zeros(()), z1.new_zeros(())
    n, d = z1.shape
    for z in (z1, z2):
        zc = z - z.mean(0)
        std = torch.sqrt(zc.var(0) + eps)
        var = var + F.relu(gamma - std).mean() / 2
        c = (zc.T @ zc) / max(n - 1, 1)
        off = c - torch.diag(torch.diag(c))
        cov = cov + (off**2).sum() / d / 2
    return {"invariance": inv, "variance": var, "covariance": cov}


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row ``i`` of ``positive`` is the positive of anchor ``i``.

    Cosine similarities divided by ``temperature``; the log-sum-exp subtracts each row's
    maximum first, so it cannot overflow (a float32 overflow at temperature 0.07 gave NaN
    in the research code).
    """
    a = F.normalize(anchor, dim=-1)
    p = F.normalize(positive, dim=-1)
    logits = a @ p.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    lse = torch.logsumexp(logits, dim=1)
    return (lse - logits.diagonal()).mean()


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CORAL: squared Frobenius distance between covariances, divided by ``4 d^2``."""
    d = source.shape[1]

    def cov(x):
        xc = x - x.mean(0)
        return xc.T @ xc / max(len(x) - 1, 1)

    return ((cov(source) - cov(target)) ** 2).sum() / (4 * d * d)


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float | None = None) -> torch.Tensor:
    """Biased squared MMD with a Gaussian kernel; bandwidth by the median heuristic when ``None``.

    The median is taken over the distinct pairs (the upper triangle), half the work of the full matrix.
    """
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    if bandwidth is None:
        upper = d2.detach().triu(1)
        bandwidth = float(torch.median(upper[upper > 0]).clamp_min(1e-12))
    k = torch.exp(-d2 / bandwidth)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
