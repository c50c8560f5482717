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
        logits = torch.sigmoid((h @ self.att_src).index_select(0, src) + (h @ self.att_dst).index_select(0, dst))
        e = torch.exp(logits)  # logits lie in (0, 1): no overflow, no max-shift needed
        denom = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device).index_add_(0, dst, e)
        return e / denom.index_select(0, dst)

    @staticmethod
    def propagate(h: torch.Tensor, alpha: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Attention-weighted sum of ``h`` over each node's incoming edges."""
        # index_select, not h[src]: the same values, and its backward (index_add_) is several times faster on CPU
        return torch.zeros_like(h).index_add_(0, dst, alpha[:, None] * h.index_select(0, src))

    def _encode(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor):
        """Latent code, edge attention and the first projection ``x @ W1`` (reused by the loss)."""
        xw = x @ self.w1
        alpha = self.attention(xw, src, dst)
        return F.elu(self.propagate(xw, alpha, src, dst)) @ self.w2, alpha, xw

    def _decode_hidden(
        self, z: torch.Tensor, alpha: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
    ) -> torch.Tensor:
        """Return the decoder's hidden layer; the reconstruction is this times ``W1`` transposed."""
        return F.elu(self.propagate(z @ self.w2.T, alpha, src, dst))

    def encode(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent code ``(n, n_latent)`` and the edge attention used to compute it."""
        z, alpha, _ = self._encode(x, src, dst)
        return z, alpha

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent code and reconstruction of ``x`` (decoder: transposed weights, the encoder's attention)."""
        z, alpha, _ = self._encode(x, src, dst)
        return z, self._decode_hidden(z, alpha, src, dst) @ self.w1.T

    def reconstruction_error(
        self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, sq_norm: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean squared error of the reconstruction of ``x``, the training loss.

        With tied weights the reconstruction is ``H @ W1.T`` (``H`` the decoder's hidden layer), so
        ``||x - H W1^T||^2 = ||x||^2 - 2 <H, x W1> + <H^T H, W1^T W1>``, and ``x @ W1`` is the
        encoder's first step. Where that is cheaper (``n * n_input > (n + n_input) * n_hidden``,
        e.g. 3,000 genes against 128 hidden units) the error is computed in this form, without the
        ``(n, n_input)`` reconstruction: of the five matrix products of ``n * n_input * n_hidden``
        multiplications in a step (forward and backward), three go. Elsewhere the reconstruction is
        formed and compared directly. Both forms give the same value and gradients up to rounding.
        ``sq_norm``, ``||x||^2`` computed once, spares the pass over ``x`` in every step of a
        training on one fixed graph.
        """
        z, alpha, xw = self._encode(x, src, dst)
        h = self._decode_hidden(z, alpha, src, dst)
        n, d = x.shape
        if n * d <= (n + d) * self.n_hidden:
            return F.mse_loss(h @ self.w1.T, x)
        if sq_norm is None:
            sq_norm = x.square().sum()
        total = sq_norm - 2.0 * (h * xw).sum() + ((h.T @ h) * (self.w1.T @ self.w1)).sum()
        return total / (n * d)
