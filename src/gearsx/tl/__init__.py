"""Tools: thin AnnData wrappers that run gearsx computations and write results to the usual slots."""

from ._stitch import stitch

__all__ = ["stitch"]
