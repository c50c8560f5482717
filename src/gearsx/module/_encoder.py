from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import MLP, GradientReversal
from ._losses import info_nce, vicreg

__all__ = ["EncoderLossOutput", "LinearAdapter", "SharedEncoderModule"]


@dataclass
class EncoderLossOutput:
    """Loss terms of :class:`~gearsx.module.SharedEncoderModule` (``total`` is the weighted sum)."""

    total: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor
    infonce: torch.Tensor
    adversarial: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        """Detached float values, for logging."""
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


class SharedEncoderModule(nn.Module):
    """Expression encoder ``f: R^G -> R^h`` trained with VICReg + spatial InfoNCE (see :ref:`gears-encoder`).

    Pure torch: tensors in, tensors out. Augmentations (gene dropout, additive Gaussian
    noise, multiplicative scale jitter) draw from torch's default generator, which the
    model seeds per training call.

    Parameters
    ----------
    n_input
        Number of genes.
    n_hidden
        Hidden widths.
    n_latent
        Embedding width.
    n_slides
        Number of slides (for the optional discriminator).
    adversarial
        Add a slide discriminator behind a gradient-reversal layer (off by default: the
        research found it destroys spatial locality).
    """

    def __init__(
        self,
        n_input: int,
        n_hidden: tuple[int, ...] = (512, 256),
        n_latent: int = 128,
        *,
        n_slides: int = 1,
        adversarial: bool = False,
        dropout_rate: float = 0.1,
        noise_std: float = 0.1,
        scale_jitter: float = 0.2,
    ) -> None:
        super().__init__()
        self.encoder = MLP(n_input, tuple(n_hidden), n_latent)
        self.dropout_rate, self.noise_std, self.scale_jitter = dropout_rate, noise_std, scale_jitter
        self.adversarial = adversarial and n_slides > 1
        if self.adversarial:
            self.discriminator = nn.Sequential(GradientReversal(1.0), MLP(n_latent, (64,), n_slides))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last hidden layer (``n_hidden[-1]`` wide), before the final linear projection."""
        return self.encoder.net[:-1](x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the final linear projection to a backbone output ``h`` (``project(backbone(x)) == forward(x)``)."""
        return self.encoder.net[-1](h)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Draw a random view: gene dropout, additive Gaussian noise, per-cell scale jitter."""
        keep = (torch.rand_like(x) >= self.dropout_rate).to(x.dtype)
        scale = 1.0 + self.scale_jitter * (2 * torch.rand(len(x), 1, device=x.device, dtype=x.dtype) - 1)
        return x * keep * scale + self.noise_std * torch.randn_like(x)

    def loss(
        self,
        x: torch.Tensor,
        x_pos: torch.Tensor | None = None,
        slide: torch.Tensor | None = None,
        *,
        w_inv: float = 25.0,
        w_var: float = 25.0,
        w_cov: float = 1.0,
        w_nce: float = 1.0,
        w_adv: float = 0.1,
        temperature: float = 0.1,
    ) -> EncoderLossOutput:
        """Loss on a batch ``x`` with physical-neighbour positives ``x_pos`` (same row order)."""
        z1, z2 = self(self.augment(x)), self(self.augment(x))
        terms = vicreg(z1, z2)
        zero = x.new_zeros(())
        # The first view doubles as the InfoNCE anchor (three forward passes per step, not four).
        nce = info_nce(z1, self(self.augment(x_pos)), temperature=temperature) if x_pos is not None else zero
        adv = zero
        if self.adversarial and slide is not None:
            adv = F.cross_entropy(self.discriminator(z1), slide)
        total = (
            w_inv * terms["invariance"]
            + w_var * terms["variance"]
            + w_cov * terms["covariance"]
            + w_nce * nce
            + w_adv * adv
        )
        return EncoderLossOutput(total, terms["invariance"], terms["variance"], terms["covariance"], nce, adv)


class LinearAdapter(nn.Module):
    """Affine map ``g(z) = W z + b`` of SC embeddings into the ST embedding distribution (see :ref:`gears-adapter`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T + self.bias
