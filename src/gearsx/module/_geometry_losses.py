"""Differentiable geometry losses (torch), batched over padded minisets with masks (see :ref:`gears-minisets`).

Every loss first gauge-fixes the prediction (masked centring, unit RMS), so it is
invariant to translation, rotation, reflection and global scale of the prediction,
and it is exactly zero when the prediction equals the target coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gearsx.geometry._targets import GeometryTargets

if TYPE_CHECKING:
    import torch

__all__ = ["TargetBatch", "collate_targets", "geo_loss", "gram_loss", "log_stress_loss", "rw_kl_loss"]

_EPS_LOG = 1e-12  # floor inside logs of probabilities
_EPS_DIST2 = 1e-24  # floor of squared distances (coincident points)
STRESS_WEIGHT = 0.1


@dataclass
class TargetBatch:
    """Padded, batched targets of ``B`` minisets of at most ``n`` points (see :func:`~gearsx.module.collate_targets`)."""

    mask: torch.Tensor  # (B, n) valid points
    coords: torch.Tensor  # (B, n, 2) gauge-fixed targets (zeros at padding)
    sigma: torch.Tensor | None = None  # (B, n)
    adjacency: torch.Tensor | None = None  # (B, n, n) bool
    rw_powers: torch.Tensor | None = None  # (B, S, n, n)
    rw_entropy: torch.Tensor | None = None  # (B, S, n) sum_j T log T of each target row
    step_mask: torch.Tensor | None = None  # (B, S)
    edges: torch.Tensor | None = None  # (B, E, 2) long
    edge_mask: torch.Tensor | None = None  # (B, E)
    delta: torch.Tensor | None = None  # (B, E)

    @property
    def has_rw(self) -> bool:
        return self.rw_powers is not None

    def to(self, device) -> TargetBatch:
        """Move every tensor to ``device``."""
        return TargetBatch(**{k: (v.to(device) if v is not None else None) for k, v in self.__dict__.items()})


def collate_targets(targets: list[GeometryTargets], *, device=None, dtype=None) -> TargetBatch:
    """Pad a list of :class:`~gearsx.geometry.GeometryTargets` to one :class:`~gearsx.module.TargetBatch` (torch tensors).

    Random-walk and stress fields are included only when every miniset has them
    (``kind='rw_stress'``).
    """
    import torch

    if not targets:
        msg = "`targets` is empty; pass at least one GeometryTargets."
        raise ValueError(msg)
    dtype = dtype or torch.get_default_dtype()
    b, n = len(targets), max(t.n for t in targets)
    f = lambda a: torch.as_tensor(a, dtype=dtype, device=device)
    mask = np.zeros((b, n), dtype=bool)
    coords = np.zeros((b, n, 2))
    for i, t in enumerate(targets):
        mask[i, : t.n] = True
        coords[i, : t.n] = t.coords
    batch = TargetBatch(mask=torch.as_tensor(mask, device=device), coords=f(coords))
    if not all(t.rw_powers is not None for t in targets):
        return batch
    s, e = max(len(t.steps) for t in targets), max(len(t.delta) for t in targets)
    sigma, adj = np.ones((b, n)), np.zeros((b, n, n), dtype=bool)
    powers, step_mask = np.zeros((b, s, n, n)), np.zeros((b, s), dtype=bool)
    edges, edge_mask, delta = np.zeros((b, e, 2), dtype=np.int64), np.zeros((b, e), dtype=bool), np.ones((b, e))
    for i, t in enumerate(targets):
        m, ns, ne = t.n, len(t.steps), len(t.delta)
        sigma[i, :m], adj[i, :m, :m] = t.sigma, t.adjacency
        powers[i, :ns, :m, :m], step_mask[i, :ns] = t.rw_powers, True
        edges[i, :ne], edge_mask[i, :ne], delta[i, :ne] = t.edges, True, t.delta
    batch.sigma, batch.adjacency = f(sigma), torch.as_tensor(adj, device=device)
    batch.rw_powers, batch.step_mask = f(powers), torch.as_tensor(step_mask, device=device)
    with np.errstate(divide="ignore", invalid="ignore"):
        batch.rw_entropy = f(np.where(powers > 0, powers * np.log(np.where(powers > 0, powers, 1.0)), 0.0).sum(-1))
    batch.edges, batch.edge_mask = torch.as_tensor(edges, device=device), torch.as_tensor(edge_mask, device=device)
    batch.delta = f(delta)
    return batch


def _as_batch(x: torch.Tensor, targets) -> tuple[torch.Tensor, TargetBatch]:
    if isinstance(targets, GeometryTargets):
        targets = collate_targets([targets], device=x.device, dtype=x.dtype)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3 or x.shape[:2] != targets.mask.shape:
        msg = f"`coords` must have shape (B, n, d) = {(*targets.mask.shape, 'd')}; got {tuple(x.shape)}."
        raise ValueError(msg)
    return x, targets


def masked_gauge_fix(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Centre each set on its valid points and scale it to unit RMS norm (padding set to 0)."""
    import torch

    m = mask.unsqueeze(-1).to(x.dtype)
    count = m.sum(1, keepdim=True).clamp_min(1.0)
    xc = (x - (x * m).sum(1, keepdim=True) / count) * m
    # Clamp before the square root: its gradient at 0 is infinite (a collapsed prediction).
    rms = torch.sqrt((((xc**2).sum(-1, keepdim=True) * m).sum(1, keepdim=True) / count).clamp_min(1e-16))
    return xc / rms


def _pairwise_sq(x: torch.Tensor) -> torch.Tensor:
    # |x_i|^2 + |x_j|^2 - 2 x_i.x_j: no (B, n, n, d) intermediate; clamped against rounding below 0.
    sq = (x**2).sum(-1)
    return (sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * x @ x.transpose(1, 2)).clamp_min(0.0)


def rw_kl_loss(coords: torch.Tensor, targets) -> torch.Tensor:
    """Multistep random-walk KL loss ``sum_s 0.5^(s-1) mean_i KL(T_ref^s[i] || T_pred^s[i])``.

    ``T_pred`` is built on the prediction (gauge-fixed) with the target's kNN edges
    and frozen bandwidths. The row KL is averaged over valid points (so the loss does
    not grow with the miniset size) and over the batch. The one-step operator is a
    masked softmax (no underflow); padded rows get a self-loop and are ignored.

    Parameters
    ----------
    coords
        Predicted coordinates, ``(n, d)`` or ``(B, n, d)``.
    targets
        :class:`~gearsx.geometry.GeometryTargets` (single miniset) or :class:`~gearsx.module.TargetBatch`.
    """
    import torch

    x, t = _as_batch(coords, targets)
    if not t.has_rw:
        msg = "These targets have no random-walk operator; build them with kind='rw_stress'."
        raise ValueError(msg)
    x = masked_gauge_fix(x, t.mask)
    n = x.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    adj = t.adjacency | (eye & ~t.mask.unsqueeze(-1))  # self-loops on padded rows keep them finite
    logits = -_pairwise_sq(x) / (t.sigma.unsqueeze(2) * t.sigma.unsqueeze(1)).clamp_min(1e-24)
    logits = logits.masked_fill(~adj, float("-inf"))
    t1 = torch.softmax(logits, dim=-1)
    ref = t.rw_powers
    row_mask = t.mask.to(x.dtype)
    total = x.new_zeros(x.shape[0])
    power = t1
    for s in range(ref.shape[1]):
        if s > 0:
            power = power @ t1
        r = ref[:, s]
        # KL = sum_j r log r - sum_j r log p; the first term is a constant of the targets (0 log 0 = 0).
        kl = t.rw_entropy[:, s] - (r * torch.log(power + _EPS_LOG)).sum(-1)
        per_set = (kl * row_mask).sum(-1) / row_mask.sum(-1).clamp_min(1.0)
        total = total + (0.5**s) * per_set * t.step_mask[:, s].to(x.dtype)
    return total.mean()


def log_stress_loss(coords: torch.Tensor, targets) -> torch.Tensor:
    """Multiscale log-stress ``mean (log ||x_i - x_j|| - log delta_ij)^2`` on the target's edges.

    The prediction is gauge-fixed first; coincident points are floored (no NaN).
    """
    import torch

    x, t = _as_batch(coords, targets)
    if t.edges is None:
        msg = "These targets have no stress edges; build them with kind='rw_stress'."
        raise ValueError(msg)
    x = masked_gauge_fix(x, t.mask)
    b = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    d2 = ((x[b, t.edges[..., 0]] - x[b, t.edges[..., 1]]) ** 2).sum(-1)
    resid = 0.5 * torch.log(d2.clamp_min(_EPS_DIST2)) - torch.log(t.delta.clamp_min(1e-12))
    em = t.edge_mask.to(x.dtype)
    return ((resid**2 * em).sum(-1) / em.sum(-1).clamp_min(1.0)).mean()


def gram_loss(coords: torch.Tensor, targets) -> torch.Tensor:
    """Relative Gram loss ``||G_pred - G_ref||_F^2 / ||G_ref||_F^2``.

    ``G = X X^T`` of the gauge-fixed sets; the prediction may have any number of
    columns (e.g. the model's ``d``-dimensional output).
    """
    x, t = _as_batch(coords, targets)
    x = masked_gauge_fix(x, t.mask)
    g_pred = x @ x.transpose(1, 2)
    g_ref = t.coords @ t.coords.transpose(1, 2)
    return (((g_pred - g_ref) ** 2).sum((1, 2)) / (g_ref**2).sum((1, 2)).clamp_min(1e-12)).mean()


def geo_loss(coords: torch.Tensor, targets) -> torch.Tensor:
    """Compute the geometry loss ``L_geo = L_RW + 0.1 L_stress`` (see :ref:`gears-minisets`).

    Parameters
    ----------
    coords
        Predicted coordinates, ``(n, 2)`` for one miniset or ``(B, n, 2)`` for a padded batch.
    targets
        :class:`~gearsx.geometry.GeometryTargets` of one miniset or a :class:`~gearsx.module.TargetBatch` from :func:`~gearsx.module.collate_targets`.

    Returns
    -------
    A scalar tensor, ``0`` (to numerical precision) for the target coordinates themselves.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from gearsx.geometry import build_targets
    >>> from gearsx.module import geo_loss
    >>> y = np.random.default_rng(0).uniform(size=(128, 2))
    >>> float(geo_loss(torch.as_tensor(3 * y + 1, dtype=torch.float64), build_targets(y))) < 1e-6
    True
    """
    return rw_kl_loss(coords, targets) + STRESS_WEIGHT * log_stress_loss(coords, targets)
