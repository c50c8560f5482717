"""Pure torch modules (tensors in, tensors out; no AnnData)."""

from ._blocks import MLP, GradientReversal
from ._encoder import EncoderLossOutput, LinearAdapter, SharedEncoderModule
from ._gears import GearsLossOutput, GearsModule, principal_coords
from ._losses import coral_loss, info_nce, mmd_rbf, vicreg
from ._minisets import MinisetBatches
from ._set_transformer import ISAB, MAB, PMA

__all__ = [
    "GearsLossOutput",
    "GearsModule",
    "ISAB",
    "MAB",
    "MinisetBatches",
    "PMA",
    "principal_coords",
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
