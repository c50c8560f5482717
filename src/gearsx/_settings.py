from __future__ import annotations

import logging
import sys

__all__ = ["settings"]

#: The settings a user can change (the properties of ``_Settings``).
_PUBLIC = ("progress_bar", "verbosity", "dask_client")
#: scanpy's integer verbosity levels, mapped to logging levels.
_INT_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG, 4: logging.DEBUG}
_NAMES = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "hint": logging.DEBUG,
    "debug": logging.DEBUG,
}


class _Settings:
    """Global, user-changeable settings of gearsx (cf. ``scanpy.settings``).

    Attributes
    ----------
    progress_bar
        Show :mod:`tqdm` progress bars on long work (training, simulation of
        large data sets, stitching). A per-call ``progress=`` argument wins.
    verbosity
        How much gearsx logs: ``'error'``, ``'warning'`` (default), ``'info'`` (what each step
        did: devices, diagnostics, replaced keys) or ``'debug'``; scanpy's integers 0-4 and
        :mod:`logging` levels are accepted too. Messages go to standard error (a notebook shows
        them under the cell) through a handler on the ``'gearsx'`` logger.

    Examples
    --------
    >>> import gearsx as gx
    >>> gx.settings.verbosity = "info"
    >>> gx.settings.verbosity
    'info'
    >>> gx.settings.verbosity = "warning"

    Only these settings exist: assigning any other name (a typo such as ``progressbar``) raises an
    :class:`AttributeError` instead of being kept and ignored.
    """

    __slots__ = ("_dask_client", "_logger", "_progress_bar")

    def __init__(self) -> None:
        self._progress_bar = True
        self._dask_client = None
        self._logger = logging.getLogger("gearsx")
        if not any(getattr(h, "_gearsx", False) for h in self._logger.handlers):
            handler = logging.StreamHandler(_StderrProxy())
            handler.setFormatter(logging.Formatter("%(levelname)s (gearsx): %(message)s"))
            handler._gearsx = True
            self._logger.addHandler(handler)
        # Our handler prints the messages; passing them on as well would print them twice wherever
        # the root logger has a handler (Jupyter, logging.basicConfig).
        self._logger.propagate = False
        if self._logger.level == logging.NOTSET:
            self._logger.setLevel(logging.WARNING)

    def __setattr__(self, name: str, value) -> None:
        if name not in self.__slots__ and not isinstance(getattr(type(self), name, None), property):
            msg = f"gx.settings has no setting {name!r}; the settings are {_PUBLIC}."
            raise AttributeError(msg)
        super().__setattr__(name, value)

    @property
    def progress_bar(self) -> bool:
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool) -> None:
        from gearsx._utils import check_flag

        self._progress_bar = check_flag(value, name="progress_bar")  # a string such as "no" would read as True

    @property
    def verbosity(self) -> str:
        level = self._logger.getEffectiveLevel()
        return {v: k for k, v in _NAMES.items()}.get(level, logging.getLevelName(level).lower())

    @verbosity.setter
    def verbosity(self, level: int | str) -> None:
        if isinstance(level, bool):
            level = str(level)
        if isinstance(level, str):
            if level.lower() not in _NAMES:
                msg = f"`verbosity` must be one of {sorted(_NAMES)} or an integer 0-4; got {level!r}."
                raise ValueError(msg)
            value = _NAMES[level.lower()]
        elif isinstance(level, int) and level in _INT_LEVELS:
            value = _INT_LEVELS[level]
        elif isinstance(level, int) and level >= 5:  # a logging level such as logging.INFO
            value = level
        else:
            msg = f"`verbosity` must be one of {sorted(_NAMES)} or an integer 0-4; got {level!r}."
            raise ValueError(msg)
        self._logger.setLevel(value)

    @property
    def dask_client(self):
        return self._dask_client

    @dask_client.setter
    def dask_client(self, client) -> None:
        from gearsx._utils import check_client

        self._dask_client = check_client(client, name="dask_client")

    def __repr__(self) -> str:
        return (
            f"gearsx settings: progress_bar={self.progress_bar}, verbosity={self.verbosity!r}, "
            f"dask_client={self._dask_client!r}"
        )


class _StderrProxy:
    """Write to whatever ``sys.stderr`` is at the time (Jupyter and pytest replace it after import)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


settings = _Settings()
