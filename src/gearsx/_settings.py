from __future__ import annotations

import logging

__all__ = ["settings"]


class _Settings:
    """Global, user-changeable settings of gearsx.

    Attributes
    ----------
    progress_bar
        Show :mod:`tqdm` progress bars on long work (training, simulation of
        large data sets, stitching). A per-call ``progress=`` argument wins.
    verbosity
        Logging level of the ``gearsx`` logger (``logging.WARNING`` by default;
        set ``logging.INFO`` to see what each step did).
    """

    def __init__(self) -> None:
        self.progress_bar: bool = True
        self._logger = logging.getLogger("gearsx")

    @property
    def verbosity(self) -> int:
        return self._logger.getEffectiveLevel()

    @verbosity.setter
    def verbosity(self, level: int | str) -> None:
        self._logger.setLevel(level)

    def __repr__(self) -> str:
        return f"gearsx settings: progress_bar={self.progress_bar}, verbosity={logging.getLevelName(self.verbosity)}"


settings = _Settings()
