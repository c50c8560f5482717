"""Pure torch modules (tensors in, tensors out; no AnnData)."""

from ._blocks import MLP, GradientReversal
from ._encoder import EncoderLossOutput, LinearAdapter, SharedEncoderModule
from ._gears import GearsLossOutput, GearsModule, principal_coords
from ._geometry_losses import TargetBatch, collate_targets, geo_loss, gram_loss, log_stress_loss, rw_kl_loss
from ._graph_autoencoder import GraphAttentionAutoencoder
from ._losses import coral_loss, info_nce, mmd_rbf, vicreg
from ._scan import ScanHead, scan_loss, self_label_loss
from ._set_transformer import ISAB, MAB, PMA
from ._structure import EdgeGate, StructureModule, candidate_graph, gate_losses, spatial_graph


def __getattr__(name: str):
    if name == "MinisetBatches":  # moved to the training wing
        import warnings

        from gearsx.train import MinisetBatches

        warnings.warn(
            "`gearsx.module.MinisetBatches` moved to `gearsx.train.MinisetBatches`; "
            "the old name will be removed in a future release.",
            FutureWarning,
            stacklevel=2,
        )
        return MinisetBatches
    msg = f"module 'gearsx.module' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "GearsLossOutput",
    "GearsModule",
    "GraphAttentionAutoencoder",
    "ISAB",
    "MAB",
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
    "TargetBatch",
    "collate_targets",
    "geo_loss",
    "gram_loss",
    "log_stress_loss",
    "rw_kl_loss",
]
