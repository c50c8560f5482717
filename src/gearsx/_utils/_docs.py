from __future__ import annotations

__all__ = ["doc_params"]


def doc_params(**snippets: str):
    """Fill ``{name}`` fields of a docstring with shared parameter text (cf. scanpy's ``_doc_params``)."""

    def decorator(obj):
        obj.__doc__ = obj.__doc__.format(**snippets)
        return obj

    return decorator
