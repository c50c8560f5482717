"""Pure torch modules (tensors in, tensors out; no AnnData)."""

from ._blocks import MLP, GradientReversal
from ._encoder import EncoderLossOutput, LinearAdapter, SharedEncoderModule
from ._losses import coral_loss, info_nce, mmd_rbf, vicreg

__all__ = [
    "MLP",
    "EncoderLossOutput",
    "GradientReversal",
    "LinearAdapter",
    "SharedEncoderModule",
    "coral_loss",
    "info_nce",
    "mmd_rbf",
    "vicreg",
]
