from ._device import resolve_device
from ._random import as_rng
from ._validation import check_coords, check_positive_int

__all__ = ["as_rng", "check_coords", "check_positive_int", "resolve_device"]
