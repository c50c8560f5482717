"""The optional :mod:`dask.distributed` client: validation and the settings default."""

from __future__ import annotations

from typing import Any

__all__ = ["check_client", "resolve_client"]


def check_client(client: Any, *, name: str = "client") -> Any:
    """Validate a :class:`distributed.Client` (``None`` passes through); a clear error otherwise."""
    if client is None:
        return None
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - distributed ships with the dask extra
        msg = f"`{name}` needs dask.distributed; install it with `pip install 'gearsx[dask]'`."
        raise ImportError(msg) from err
    if not isinstance(client, Client):
        msg = (
            f"`{name}` must be a dask.distributed Client (or None for in-process work); got {type(client).__name__}. "
            "Create one with `from distributed import Client; client = Client(...)`."
        )
        raise TypeError(msg)
    if client.status != "running":
        msg = f"`{name}` is not connected (status {client.status!r}); pass a running Client."
        raise ValueError(msg)
    return client


def resolve_client(client: Any) -> Any:
    """``client`` itself when given, else ``gx.settings.dask_client`` (``None``: in process), validated."""
    if client is None:
        from gearsx._settings import settings

        return check_client(settings.dask_client, name="gx.settings.dask_client")
    return check_client(client)
