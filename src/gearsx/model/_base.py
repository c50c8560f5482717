"""Shared machinery of gearsx model classes (cf. scvi-tools' ``BaseModelClass``).

A small explicit registry (:mod:`gearsx.model._registry`); training through
Lightning; save/load as a tensors-only state dict (``model.pt``, loadable with
``torch.load(weights_only=True)``) plus JSON metadata (``meta.json``) with a
``format_version``. Nothing is pickled, so saved models survive library upgrades.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gearsx._utils import checks_flags

from ._registry import Registration, Registry, slide_names

if TYPE_CHECKING:
    from typing import Self

    import pandas as pd
    import torch
    from anndata import AnnData

__all__ = ["FORMAT_VERSION", "GearsModelBase"]

logger = logging.getLogger(__name__)

#: Version of the on-disk model format; bump it (with a converter or a clear error) on any change.
FORMAT_VERSION = 1
_META_FILE, _STATE_FILE, _ADATA_FILE = "meta.json", "model.pt", "adata.h5ad"
_META_REQUIRED = ("class", "format_version", "init_params", "setup_args", "var_names", "is_trained", "history")
#: The ``Attributes`` section of every model's docstring (filled in with :func:`gearsx._utils.doc_params`).
MODEL_ATTRIBUTES = """history_
        :class:`pandas.DataFrame` of the per-epoch training metrics (one row per epoch, over
        every ``train`` call), ``None`` before training.
    train_params_
        The arguments of the last ``train`` call and the split it used (for :class:`GEARS`, also
        ``encoder_id``: the fingerprint of the encoder that embedded its ST data, when recorded).
    registration_
        What :meth:`setup_anndata` recorded for ``adata`` (``None`` for a model loaded without data)."""


class GearsModelBase:
    """Base of gearsx models: AnnData + registry + torch module + training state."""

    _module_kwargs: dict[str, Any]

    def __init__(self, adata: AnnData | None) -> None:
        self.adata = adata
        self.registration_ = self._registry_get(adata) if adata is not None else None
        self._setup_args = dict(self.registration_.setup_args) if self.registration_ is not None else {}
        self._saved_meta: dict[str, Any] = {}  # var_names and slides of a model loaded without data
        self.module = None
        self.is_trained_ = False
        self.history_: pd.DataFrame | None = None
        self._device = None

    # --- registry ------------------------------------------------------------------------------
    @classmethod
    def _registry(cls) -> Registry:
        if "_registrations" not in cls.__dict__:
            cls._registrations = Registry()
        return cls._registrations

    @classmethod
    def _is_registered(cls, adata: AnnData) -> bool:
        """Whether ``adata`` itself (not an object it was copied from) is registered for this class."""
        return cls._registry().get(adata) is not None

    @classmethod
    def _registry_get(cls, adata: AnnData) -> Registration:
        registration = cls._registry().get(adata)
        if registration is None:
            msg = (
                f"`adata` is not set up for {cls.__name__} (a copy or subset of a registered AnnData is not "
                f"registered itself); run `gx.model.{cls.__name__}.setup_anndata(adata, ...)` first."
            )
            raise ValueError(msg)
        return registration

    @classmethod
    @contextmanager
    def _restore_on_error(cls, adata: AnnData):
        """Forget a registration made inside the block when the block fails (registering writes nothing)."""
        with cls._registry().restore_on_error(adata):
            yield

    @classmethod
    def _register(cls, adata: AnnData, setup_args: dict) -> None:
        """Record ``setup_args`` for ``adata``; call after every check has passed."""
        names = slide_names(adata, setup_args.get("slide_key"))
        cls._registry().add(adata, Registration(setup_args=dict(setup_args), slide_names=names))

    def _slide_names(self) -> list[str]:
        if self.registration_ is None:
            return list(self._saved_meta.get("slides", []))
        return list(self.registration_.slide_names)

    def _slide_codes(self) -> np.ndarray:
        return self.registration_.slide_codes(self.adata)

    def _coords(self) -> np.ndarray:
        return np.asarray(self.adata.obsm[self.setup_args["spatial_key"]], dtype=np.float64)

    @property
    def setup_args(self) -> dict:
        """The arguments ``setup_anndata`` was called with."""
        return dict(self._setup_args)

    @property
    def is_trained(self) -> bool:
        """Whether the model has been trained (or loaded trained)."""
        return bool(self.is_trained_)

    # --- device / training state ----------------------------------------------------------------
    @property
    def device(self):
        """The torch device the module lives on."""
        return next(self.module.parameters()).device

    def to_device(self, device: torch.device | str) -> None:
        """Move the module to ``device``.

        Parameters
        ----------
        device
            A :class:`torch.device` or a string such as ``'cpu'`` or ``'cuda:0'``.
        """
        self.module.to(device)

    def _check_if_trained(self) -> None:
        if not self.is_trained_:
            msg = f"This {type(self).__name__} is not trained yet; call `.train()` first."
            raise RuntimeError(msg)

    def _fit_lightning(self, plan, loader, **kwargs) -> None:
        """Fit ``plan`` with :func:`gearsx.train.fit_lightning`; append to ``history_``, mark trained."""
        import pandas as pd

        from gearsx.train import fit_lightning

        new, device = fit_lightning(plan, loader, reinitialise=not self.is_trained_, **kwargs)
        self.history_ = new if self.history_ is None else pd.concat([self.history_, new], ignore_index=True)
        self.is_trained_ = True
        self.module.to(device)

    # --- save / load ---------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, meta: dict, state: dict) -> None:
        return None

    @property
    def var_names(self) -> list[str]:
        """Genes of the data the model was set up on, in order."""
        if self.adata is None:
            return list(self._saved_meta.get("var_names", []))
        return [str(v) for v in self.adata.var_names]

    @checks_flags
    def save(self, dir_path: str | Path, *, overwrite: bool = False, save_anndata: bool = False) -> None:
        """Save the model: ``model.pt`` (tensors only) and ``meta.json`` (+ ``adata.h5ad`` if asked).

        Parameters
        ----------
        dir_path
            Folder to write (created).
        overwrite
            Replace the model files of an existing, non-empty folder. An ``adata.h5ad`` left
            there by an earlier save is removed unless ``save_anndata=True`` writes a new one,
            so :meth:`load` never attaches a stale AnnData.
        save_anndata
            Also write the AnnData.

        Examples
        --------
        >>> model.save("my_model", overwrite=True)  # doctest: +SKIP
        >>> model = type(model).load("my_model")  # doctest: +SKIP
        """
        import torch

        from gearsx._version import __version__

        path = Path(dir_path)
        if path.exists() and not path.is_dir():
            msg = f"`dir_path`={str(path)!r} is a file; give a folder to write the model into."
            raise NotADirectoryError(msg)
        if path.exists() and any(path.iterdir()) and not overwrite:
            msg = f"{path} exists and is not empty; pass overwrite=True to replace it."
            raise FileExistsError(msg)
        if save_anndata and self.adata is None:
            msg = "This model was loaded without its AnnData; there is none to save. Pass save_anndata=False."
            raise ValueError(msg)
        state = {f"module.{k}": v.detach().cpu() for k, v in self.module.state_dict().items()}
        extra = self._extra_state()
        state.update(extra.pop("tensors", {}))
        meta = {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "init_params": self._module_kwargs,
            "setup_args": self.setup_args,
            "var_names": self.var_names,
            "is_trained": self.is_trained_,
            "history": self.history_.to_dict(orient="list") if self.history_ is not None else {},
            "versions": {"gearsx": __version__, "torch": torch.__version__},
            **extra,
        }
        path.mkdir(parents=True, exist_ok=True)
        stale = path / _ADATA_FILE
        if stale.exists() and not save_anndata:
            stale.unlink()
        torch.save(state, path / _STATE_FILE)
        (path / _META_FILE).write_text(json.dumps(meta, indent=1))
        if save_anndata:
            self.adata.write_h5ad(path / _ADATA_FILE)

    @classmethod
    def _upgrade_saved(cls, meta: dict, state: dict) -> None:
        """Bring a model saved by an older gearsx (``meta.json`` and weights) up to date, in place.

        Classes with changes of their own extend it (calling this first).
        """
        if "embedding_key" in meta["setup_args"]:  # saved before the argument was renamed use_rep
            meta["setup_args"]["use_rep"] = meta["setup_args"].pop("embedding_key")

    @classmethod
    def _read_saved(cls, path: Path) -> tuple[dict, dict]:
        """``meta.json`` and ``model.pt`` of a saved model, with errors that name the file and the fix."""
        import torch

        meta_file, state_file = path / _META_FILE, path / _STATE_FILE
        if not meta_file.exists():
            msg = f"{meta_file} not found; is {path} a folder written by `.save()`?"
            raise FileNotFoundError(msg)
        try:
            meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            msg = f"{meta_file} is not valid JSON ({err}); the saved model is damaged: save it again with `.save()`."
            raise ValueError(msg) from err
        missing = [k for k in _META_REQUIRED if not isinstance(meta, dict) or k not in meta]
        if missing:
            msg = f"{meta_file} lacks {missing}; it was not written by gearsx `.save()`: save the model again."
            raise ValueError(msg)
        if meta.get("class") != cls.__name__:
            msg = f"{path} holds a {meta.get('class')!r}, not a {cls.__name__}; load it with that class."
            raise ValueError(msg)
        if meta.get("format_version") != FORMAT_VERSION:
            msg = f"{path} has format_version {meta.get('format_version')}; this gearsx reads version {FORMAT_VERSION}."
            raise ValueError(msg)
        if not state_file.exists():
            msg = f"{state_file} not found; the saved model is incomplete: save it again with `.save()`."
            raise FileNotFoundError(msg)
        try:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as err:
            msg = (
                f"{state_file} could not be read as a gearsx state dict ({type(err).__name__}: {err}); "
                "the file is truncated or not a gearsx model: save the model again with `.save()`."
            )
            raise ValueError(msg) from err
        if not isinstance(state, dict) or not any(str(k).startswith("module.") for k in state):
            msg = f"{state_file} holds no gearsx module weights; save the model again with `.save()`."
            raise ValueError(msg)
        cls._upgrade_saved(meta, state)
        return meta, state

    @classmethod
    def _without_anndata(cls, meta: dict, state: dict):
        """Rebuild a model from its saved state alone; classes that need their data raise."""
        msg = (
            f"No AnnData was saved with this {cls.__name__}, and it needs one; pass `adata=` "
            "(same genes, in the same order) or save with `save_anndata=True`."
        )
        raise ValueError(msg)

    def _load_weights(self, meta: dict, state: dict, path: Path) -> None:
        module_state = {k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")}
        try:
            self.module.load_state_dict(module_state)
        except RuntimeError as err:
            msg = (
                f"The weights in {path / _STATE_FILE} do not fit the architecture in {path / _META_FILE} "
                f"({str(err).splitlines()[0]}); the files come from different saves: save the model again."
            )
            raise ValueError(msg) from err
        self._load_extra_state(meta, state)
        self.is_trained_ = bool(meta["is_trained"])
        self.history_ = _history_frame(meta["history"])

    @classmethod
    def load(cls, dir_path: str | Path, adata: AnnData | None = None, *, accelerator: str = "auto") -> Self:
        """Load a model saved with ``.save()``.

        Parameters
        ----------
        dir_path
            Folder written by ``.save()``.
        adata
            AnnData to attach (same genes, in the same order); default: the saved one. A
            :class:`~gearsx.model.GEARS` model loads without any AnnData and reconstructs
            queries as it is (it only needs their embeddings).
        accelerator
            Device to load onto (``'auto'``: CUDA when available).

        Returns
        -------
        The model (nothing is registered when loading fails, see ``setup_anndata``).

        Examples
        --------
        >>> geo = gx.model.GEARS.load("my_model")  # doctest: +SKIP
        >>> gx.tl.reconstruct(adata_sc, geo)  # doctest: +SKIP
        """
        import anndata as ad

        from gearsx._utils import resolve_device

        path = Path(dir_path)
        device = resolve_device(accelerator)
        meta, state = cls._read_saved(path)
        if adata is None:
            if not (path / _ADATA_FILE).exists():
                model = cls._without_anndata(meta, state)
                model._load_weights(meta, state, path)
                model.to_device(device)
                return model
            adata = ad.read_h5ad(path / _ADATA_FILE)
        _check_var_names(adata, meta["var_names"])
        with cls._restore_on_error(adata):
            cls.setup_anndata(adata, **meta["setup_args"])
            model = cls(adata, **meta["init_params"])
            model._load_weights(meta, state, path)
        model.to_device(device)
        return model

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._module_kwargs.items())
        state = "trained" if self.is_trained_ else "not trained"
        epochs = f", {len(self.history_)} epochs" if self.history_ is not None else ""
        data = "without data" if self.adata is None else f"on {self.adata.n_obs} x {self.adata.n_vars}"
        return f"{type(self).__name__}({params}) {data}; {state}{epochs}"


def _history_frame(history: dict):
    import pandas as pd

    return pd.DataFrame(history) if history else None


def _check_var_names(adata: AnnData, var_names) -> None:
    names = np.asarray(adata.var_names).astype(str)
    expected = np.asarray(var_names).astype(str)
    if len(names) != len(expected) or not (names == expected).all():
        present = set(names.tolist())
        missing = [str(g) for g in expected if g not in present]
        if missing:
            shown = ", ".join(repr(g) for g in missing[:5]) + (", ..." if len(missing) > 5 else "")
            what = f"{len(missing)} of the model's genes are missing from it ({shown})"
        else:
            extra = len(names) - len(expected)
            what = (
                f"it holds the model's genes and {extra} more"
                if extra
                else "it holds the model's genes in another order"
            )
        msg = (
            f"The genes of `adata` ({len(names)}) do not match the model's ({len(expected)}): {what}. The model "
            "reads genes by position: pass `adata[:, model.var_names]` (the same genes, in the model's order)."
        )
        raise ValueError(msg)
