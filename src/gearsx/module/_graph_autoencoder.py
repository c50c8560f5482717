"""Graph attention autoencoder over a spatial neighbour graph, for domain representations (see :ref:`gears-domains`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GraphAttentionAutoencoder"]


class GraphAttentionAutoencoder(nn.Module):
    """Tied-weight graph attention autoencoder (after STAGATE, Dong & Zhang 2022).

    The encoder projects each spot's expression (``W1``), averages it over the spot's spatial
    neighbours with learned attention, and projects the result to the latent code (``W2``). The
    decoder mirrors it with the transposed weights and the same attention, so the latent code
    must describe a spot *together with its neighbourhood*: spots of one tissue domain share
    neighbourhoods and are pulled together, which is what clustering into domains needs.

    Attention of spot ``i`` on neighbour ``j`` is ``softmax_j(sigmoid(a_s . h_j + a_d . h_i))``
    over the neighbours of ``i`` (including ``i``). The graph is given as an edge list, so memory
    is linear in the number of edges; written in plain torch (``index_add_``) because one
    attention layer does not earn a graph-library dependency.

    Parameters
    ----------
    n_input
        Number of input features.
    n_hidden
        Width of the hidden layer.
    n_latent
        Width of the latent code.
    """

    def __init__(self, n_input: int, n_hidden: int = 512, n_latent: int = 30) -> None:
        super().__init__()
        self.n_input, self.n_hidden, self.n_latent = n_input, n_hidden, n_latent
        self.w1 = nn.Parameter(torch.empty(n_input, n_hidden))
        self.w2 = nn.Parameter(torch.empty(n_hidden, n_latent))
        self.att_src = nn.Parameter(torch.empty(n_hidden))
        self.att_dst = nn.Parameter(torch.empty(n_hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights (as in graph attention layers)."""
        nn.init.xavier_uniform_(self.w1)
        nn.init.xavier_uniform_(self.w2)
        bound = (6.0 / (self.n_hidden + 1)) ** 0.5
        nn.init.uniform_(self.att_src, -bound, bound)
        nn.init.uniform_(self.att_dst, -bound, bound)

    def attention(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Attention weight of every edge ``src -> dst``; the weights into each ``dst`` sum to one."""
        logits = torch.sigmoid((h @ self.att_src)[src] + (h @ self.att_dst)[dst])
        e = torch.exp(logits)  # logits lie in (0, 1): no overflow, no max-shift needed
        denom = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device).index_add_(0, dst, e)
        return e / denom[dst]

    @staticmethod
    def propagate(h: torch.Tensor, alpha: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Attention-weighted sum of ``h`` over each node's incoming edges."""
        return torch.zeros_like(h).index_add_(0, dst, alpha[:, None] * h[src])

    def encode(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent code ``(n, n_latent)`` and the edge attention used to compute it."""
        h = x @ self.w1
        alpha = self.attention(h, src, dst)
        return F.elu(self.propagate(h, alpha, src, dst)) @ self.w2, alpha

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent code and reconstruction of ``x`` (decoder: transposed weights, the encoder's attention)."""
        z, alpha = self.encode(x, src, dst)
        h = F.elu(self.propagate(z @ self.w2.T, alpha, src, dst))
        return z, h @ self.w1.T
