from __future__ import annotations

import logging

__all__ = ["resolve_device"]

logger = logging.getLogger("gearsx")


def resolve_device(accelerator: str = "auto"):
    """Map ``accelerator`` to a :class:`torch.device`.

    ``'auto'`` picks CUDA when available, else the CPU (MPS only when asked, as in
    scvi-tools); ``'gpu'``/``'cuda'`` without CUDA and ``'mps'`` without MPS raise.
    """
    import torch

    acc = str(accelerator).lower()
    if acc == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif acc in ("gpu", "cuda") or acc.startswith("cuda:"):
        if not torch.cuda.is_available():
            msg = f"accelerator={accelerator!r} was requested but CUDA is not available; use 'auto' or 'cpu'."
            raise RuntimeError(msg)
        dev = torch.device("cuda" if acc == "gpu" else acc)
    elif acc == "mps":
        if not torch.backends.mps.is_available():
            msg = "accelerator='mps' was requested but MPS is not available; use 'auto' or 'cpu'."
            raise RuntimeError(msg)
        dev = torch.device("mps")
    elif acc == "cpu":
        dev = torch.device("cpu")
    else:
        msg = f"Unknown accelerator {accelerator!r}; use 'auto', 'cpu', 'gpu'/'cuda' or 'mps'."
        raise ValueError(msg)
    logger.info("using device %s", dev)
    return dev
