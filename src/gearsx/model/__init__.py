"""User-facing model classes (scvi-tools style: registry, training, save/load)."""

from ._encoder import SharedEncoder

__all__ = ["SharedEncoder"]
