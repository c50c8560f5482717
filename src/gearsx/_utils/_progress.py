"""The progress bar of every long step: tqdm's notebook-aware bar when shown, a silent one otherwise."""

from __future__ import annotations

from typing import Any


def progress_bar(iterable: Any = None, *, enabled: bool, **kwargs: Any):
    """Return a :class:`tqdm.tqdm` bar over ``iterable`` (or with ``total=``), drawn only when ``enabled``.

    ``tqdm.auto`` (a widget in Jupyter) is imported only for a bar that is shown: importing it
    warns in notebooks without ipywidgets, and a disabled bar should say nothing.
    """
    if enabled:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(iterable, disable=not enabled, **kwargs)
