"""gearsx: intrinsic tissue geometry for dissociated single cells.

Sub-packages follow scanpy's layout: :mod:`gearsx.pp` (preprocessing),
:mod:`gearsx.tl` (tools that annotate AnnData), :mod:`gearsx.pl` (plots),
:mod:`gearsx.model` (user-facing model classes), :mod:`gearsx.module`
(pure torch modules), :mod:`gearsx.geometry` (numerics),
:mod:`gearsx.datasets` and :mod:`gearsx.metrics`.

Heavy dependencies (scanpy, torch, scikit-learn) are imported inside the
functions that need them, so ``import gearsx`` stays fast.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, geometry, metrics, model, module, pl, pp, tl
from ._settings import settings

try:
    __version__ = version("gearsx")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["datasets", "geometry", "metrics", "model", "module", "pl", "pp", "tl", "settings", "__version__"]
