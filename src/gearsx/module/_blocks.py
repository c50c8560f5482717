from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "GradientReversal"]


class MLP(nn.Module):
    """Feed-forward stack ``Linear -> LayerNorm -> GELU (-> Dropout)`` with a linear output layer.

    Parameters
    ----------
    n_input
        Input width.
    hidden
        Widths of the hidden layers.
    n_output
        Output width.
    dropout
        Dropout after each hidden activation.
    """

    def __init__(self, n_input: int, hidden: tuple[int, ...], n_output: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_input
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_output))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


class GradientReversal(nn.Module):
    """Identity in the forward pass; multiplies gradients by ``-alpha`` in the backward pass."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGrad.apply(x, self.alpha)
