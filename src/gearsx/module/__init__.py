"""Pure torch modules (tensors in, tensors out; no AnnData)."""

from ._blocks import MLP, GradientReversal
from ._encoder import EncoderLossOutput, LinearAdapter, SharedEncoderModule
from ._gears import GearsLossOutput, GearsModule, principal_coords
from ._losses import coral_loss, info_nce, mmd_rbf, vicreg
from ._minisets import MinisetBatches
from ._scan import ScanHead, scan_loss, self_label_loss
from ._set_transformer import ISAB, MAB, PMA
from ._structure import EdgeGate, StructureModule, candidate_graph, gate_losses, spatial_graph

__all__ = [
    "GearsLossOutput",
    "GearsModule",
    "ISAB",
    "MAB",
    "MinisetBatches",
    "PMA",
    "ScanHead",
    "EdgeGate",
    "StructureModule",
    "candidate_graph",
    "gate_losses",
    "spatial_graph",
    "scan_loss",
    "self_label_loss",
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
