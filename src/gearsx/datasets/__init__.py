"""Data sets: the embedded tissue simulator and the pseudo-spot benchmark protocol."""

from ._pseudo_spots import pseudo_spots
from ._simulate import simulate_tissue

__all__ = ["pseudo_spots", "simulate_tissue"]
