"""The training wing (torch and Lightning): one runner, the training plans and the data loaders.

The models of :mod:`gearsx.model` import it when they train; importing :mod:`gearsx` does not.
"""

from ._loaders import GraphBatch, MinisetBatches, SlideBatches, miniset_loaders, validation_split
from ._plans import (
    AdapterTrainingPlan,
    EncoderTrainingPlan,
    GearsTrainingPlan,
    GraphAutoencoderTrainingPlan,
    ScanTrainingPlan,
)
from ._runner import EpochProgress, fit_lightning

__all__ = [
    "AdapterTrainingPlan",
    "EncoderTrainingPlan",
    "EpochProgress",
    "GearsTrainingPlan",
    "GraphAutoencoderTrainingPlan",
    "GraphBatch",
    "MinisetBatches",
    "ScanTrainingPlan",
    "SlideBatches",
    "fit_lightning",
    "miniset_loaders",
    "validation_split",
]
