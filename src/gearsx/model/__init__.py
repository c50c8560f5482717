"""User-facing model classes (scvi-tools style: registry, training, save/load)."""

from ._adapter import SCAdapter
from ._encoder import SharedEncoder
from ._gears import GEARS

__all__ = ["GEARS", "SCAdapter", "SharedEncoder"]
