"""Set Transformer blocks (Lee et al., 2019) with padding masks: MAB, ISAB, PMA.

Pre-LayerNorm residual blocks (more stable than the paper's post-LN at small batch
sizes). Every block takes a boolean ``mask`` of valid set elements, shape ``(B, n)``;
padded elements never act as keys, and outputs at padded positions are zeroed so they
cannot leak into later blocks. ISAB and MAB over the set itself are
permutation-equivariant; PMA is permutation-invariant.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ISAB", "MAB", "PMA"]


class MAB(nn.Module):
    """Multihead attention block ``H = X + Att(LN(X), LN(Y)); out = H + FF(LN(H))``.

    Parameters
    ----------
    dim
        Width of queries, keys and values.
    n_heads
        Attention heads.
    ff_mult
        Width multiplier of the feed-forward layer.
    """

    def __init__(self, dim: int, n_heads: int = 4, ff_mult: int = 2) -> None:
        super().__init__()
        self.ln_q, self.ln_k, self.ln_h = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.att = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def reset_parameters(self) -> None:
        """Re-initialise the attention projections (the other layers reset themselves)."""
        self.att._reset_parameters()

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, key_mask: torch.Tensor | None = None, *, need_weights: bool = False
    ):
        """Attend from ``x`` (B, m, dim) to ``y`` (B, n, dim); ``key_mask`` (B, n) marks valid keys."""
        pad = None if key_mask is None else ~key_mask
        k = self.ln_k(y)
        a, w = self.att(self.ln_q(x), k, k, key_padding_mask=pad, need_weights=need_weights)
        h = x + a
        out = h + self.ff(self.ln_h(h))
        return (out, w) if need_weights else out


class ISAB(nn.Module):
    """Induced set attention block: ``m`` learned inducing points summarise the set in ``O(n m)``.

    ``H = MAB(I, X)`` (inducing points attend to the valid elements), then
    ``out = MAB(X, H)``; padded outputs are set to zero.
    """

    def __init__(self, dim: int, n_inducing: int = 32, n_heads: int = 4) -> None:
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(1, n_inducing, dim) / dim**0.5)
        self.mab1 = MAB(dim, n_heads)
        self.mab2 = MAB(dim, n_heads)

    def reset_parameters(self) -> None:
        """Re-draw the inducing points."""
        nn.init.normal_(self.inducing, std=self.inducing.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, n, dim), ``mask`` (B, n) -> (B, n, dim)."""
        h = self.mab1(self.inducing.expand(x.shape[0], -1, -1), x, mask)
        return self.mab2(x, h) * mask.unsqueeze(-1).to(x.dtype)


class PMA(nn.Module):
    """Pooling by multihead attention: ``k`` learned seeds attend to the valid elements (invariant)."""

    def __init__(self, dim: int, n_seeds: int = 1, n_heads: int = 4) -> None:
        super().__init__()
        self.seeds = nn.Parameter(torch.randn(1, n_seeds, dim) / dim**0.5)
        self.mab = MAB(dim, n_heads)

    def reset_parameters(self) -> None:
        """Re-draw the seed vectors."""
        nn.init.normal_(self.seeds, std=self.seeds.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, n, dim), ``mask`` (B, n) -> (B, n_seeds, dim)."""
        return self.mab(self.seeds.expand(x.shape[0], -1, -1), x, mask)
