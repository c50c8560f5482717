"""gearsx: intrinsic tissue geometry for dissociated single cells.

Sub-packages follow scanpy's layout: :mod:`gearsx.pp` (preprocessing),
:mod:`gearsx.tl` (tools that annotate AnnData), :mod:`gearsx.pl` (plots),
:mod:`gearsx.model` (user-facing model classes), :mod:`gearsx.module`
(pure torch modules), :mod:`gearsx.geometry` (numerics),
:mod:`gearsx.datasets` and :mod:`gearsx.metrics`.

Heavy dependencies (scanpy, torch, scikit-learn) are imported inside the
functions that need them, so ``import gearsx`` stays fast.
"""

from . import datasets, geometry, metrics, model, pl, pp, tl
from ._settings import settings
from ._version import __version__


def __getattr__(name: str):
    # `gearsx.module` holds torch modules; import it (and torch) only when first used.
    if name == "module":
        import importlib

        return importlib.import_module(".module", __name__)
    msg = f"module 'gearsx' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = ["datasets", "geometry", "metrics", "model", "module", "pl", "pp", "tl", "settings", "__version__"]
