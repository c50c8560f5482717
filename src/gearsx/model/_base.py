"""Shared machinery of gearsx model classes (cf. scvi-tools' ``BaseModelClass``).

Registry through scvi-tools' :class:`~scvi.data.AnnDataManager`; training through
Lightning; save/load as a tensors-only state dict (``model.pt``, loadable with
``torch.load(weights_only=True)``) plus JSON metadata (``meta.json``) with a
``format_version``. Nothing is pickled, so saved models survive library upgrades.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gearsx._settings import settings

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

__all__ = ["FORMAT_VERSION", "GearsModelBase"]

logger = logging.getLogger(__name__)

#: Version of the on-disk model format; bump it (with a converter or a clear error) on any change.
FORMAT_VERSION = 1
_SHOWN_VAL = ("val_spearman", "val_recall15")
_QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


def _epoch_progress(max_epochs: int, history: list[dict[str, float]], *, enabled: bool):
    """Lightning callback: one tqdm bar per ``train`` call, updated per epoch, loss in the postfix; fills ``history``."""
    from lightning.pytorch.callbacks import Callback
    from tqdm.auto import tqdm

    class _EpochProgress(Callback):
        def on_train_start(self, trainer, pl_module):
            self.bar = tqdm(total=max_epochs, desc="training", unit="epoch", disable=not enabled)

        def on_train_epoch_end(self, trainer, pl_module):
            row = {k: float(v) for k, v in trainer.callback_metrics.items()}
            history.append(row)
            post = {"loss": f"{row.get('train_total', float('nan')):.4f}"}
            post |= {k[4:]: f"{v:.3f}" for k, v in row.items() if k in _SHOWN_VAL}
            self.bar.set_postfix(post)
            self.bar.update(1)

        def on_train_end(self, trainer, pl_module):
            self.bar.close()

    return _EpochProgress()


class GearsModelBase:
    """Base of gearsx models: AnnData + registry + torch module + training state."""

    _module_kwargs: dict[str, Any]

    def __init__(self, adata: AnnData) -> None:
        self.adata = adata
        self.adata_manager = self._registry_get(adata)
        self.module = None
        self.is_trained_ = False
        self.history_: pd.DataFrame | None = None
        self._device = None

    # --- registry ------------------------------------------------------------------------------
    @classmethod
    def _registry_get(cls, adata: AnnData):
        managers = cls.__dict__.get("_managers", {})
        key = adata.uns.get("_scvi_manager_uuid")
        if key is None or key not in managers:
            msg = f"`adata` is not set up for {cls.__name__}; run `gx.model.{cls.__name__}.setup_anndata(adata, ...)` first."
            raise ValueError(msg)
        return managers[key]

    @classmethod
    def _register(cls, adata: AnnData, fields: list, setup_args: dict) -> None:
        from scvi.data import AnnDataManager

        manager = AnnDataManager(
            fields=fields, setup_method_args={"model_name": cls.__name__, "setup_args": setup_args}
        )
        scvi_logger = logging.getLogger("scvi")
        level = scvi_logger.level
        scvi_logger.setLevel(logging.WARNING)  # scvi logs routine INFO lines on registration
        try:
            manager.register_fields(adata)
        finally:
            scvi_logger.setLevel(level)
        manager.gears_setup_args = dict(setup_args)
        if "_managers" not in cls.__dict__:
            cls._managers = {}
        cls._managers[adata.uns["_scvi_manager_uuid"]] = manager

    @property
    def setup_args(self) -> dict:
        """The arguments ``setup_anndata`` was called with."""
        return dict(self.adata_manager.gears_setup_args)

    # --- device / training state ----------------------------------------------------------------
    @property
    def device(self):
        """The torch device the module lives on."""
        return next(self.module.parameters()).device

    def to_device(self, device) -> None:
        """Move the module to ``device`` (a :class:`torch.device` or a string)."""
        self.module.to(device)

    def _check_if_trained(self) -> None:
        if not self.is_trained_:
            msg = f"This {type(self).__name__} is not trained yet; call `.train()` first."
            raise RuntimeError(msg)

    def _fit_lightning(
        self,
        plan,
        loader,
        *,
        max_epochs: int,
        accelerator: str,
        devices,
        enable_progress_bar: bool,
        random_state: int,
        val_loader=None,
    ):
        """Fit ``plan`` under a forked, seeded torch RNG; an untrained module is re-initialised from the seed first."""
        import lightning.pytorch as lp
        import torch

        from gearsx._utils import resolve_device

        device = resolve_device(accelerator)
        history: list[dict[str, float]] = []
        bar = _epoch_progress(max_epochs, history, enabled=enable_progress_bar and settings.progress_bar)
        levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
        for name in _QUIET_LOGGERS:  # silence Lightning's banners and tips
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings():
                # Lightning 2.6 warns about a torch pytree API on every fit; nothing for users to act on.
                warnings.filterwarnings("ignore", message=".*treespec.*")
                warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # validation=None is allowed
                trainer = lp.Trainer(
                    max_epochs=max_epochs,
                    accelerator="gpu" if device.type == "cuda" else device.type,
                    devices=devices if devices != "auto" else 1,
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                    callbacks=[bar],
                    deterministic="warn" if device.type == "cuda" else True,
                    num_sanity_val_steps=0,
                )
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(random_state)
                    if not self.is_trained_:
                        for m in self.module.modules():
                            if hasattr(m, "reset_parameters"):
                                m.reset_parameters()
                    trainer.fit(plan, train_dataloaders=loader, val_dataloaders=val_loader)
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
        import pandas as pd

        new = pd.DataFrame(history)
        new.index.name = "epoch"
        self.history_ = new if self.history_ is None else pd.concat([self.history_, new], ignore_index=True)
        self.is_trained_ = True
        self.module.to(device)

    # --- save / load ---------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, meta: dict, state: dict) -> None:
        return None

    def save(self, dir_path: str | Path, *, overwrite: bool = False, save_anndata: bool = False) -> None:
        """Save the model: ``model.pt`` (tensors only) and ``meta.json`` (+ ``adata.h5ad`` if asked).

        Parameters
        ----------
        dir_path
            Folder to write (created).
        overwrite
            Replace an existing folder's files.
        save_anndata
            Also write the AnnData.
        """
        import torch

        import gearsx

        path = Path(dir_path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            msg = f"{path} exists and is not empty; pass overwrite=True to replace it."
            raise FileExistsError(msg)
        path.mkdir(parents=True, exist_ok=True)
        state = {f"module.{k}": v.detach().cpu() for k, v in self.module.state_dict().items()}
        extra = self._extra_state()
        state.update(extra.pop("tensors", {}))
        torch.save(state, path / "model.pt")
        meta = {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "init_params": self._module_kwargs,
            "setup_args": self.setup_args,
            "var_names": [str(v) for v in self.adata.var_names],
            "is_trained": self.is_trained_,
            "history": self.history_.to_dict(orient="list") if self.history_ is not None else {},
            "versions": {"gearsx": gearsx.__version__, "torch": torch.__version__},
            **extra,
        }
        (path / "meta.json").write_text(json.dumps(meta, indent=1))
        if save_anndata:
            self.adata.write_h5ad(path / "adata.h5ad")

    @classmethod
    def load(cls, dir_path: str | Path, adata: AnnData | None = None, *, accelerator: str = "auto"):
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            AnnData to attach (same genes, in the same order); default: the saved one.
        accelerator
            Device to load onto (``'auto'``: CUDA when available).
        """
        import anndata as ad
        import pandas as pd
        import torch

        from gearsx._utils import resolve_device

        path = Path(dir_path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            msg = f"{meta_file} not found; is {path} a folder written by `.save()`?"
            raise FileNotFoundError(msg)
        meta = json.loads(meta_file.read_text())
        if meta.get("class") != cls.__name__:
            msg = f"{path} holds a {meta.get('class')!r}, not a {cls.__name__}; load it with that class."
            raise ValueError(msg)
        if meta.get("format_version") != FORMAT_VERSION:
            msg = f"{path} has format_version {meta.get('format_version')}; this gearsx reads version {FORMAT_VERSION}."
            raise ValueError(msg)
        if adata is None:
            if not (path / "adata.h5ad").exists():
                msg = "No AnnData was saved with this model; pass `adata=`."
                raise ValueError(msg)
            adata = ad.read_h5ad(path / "adata.h5ad")
        _check_var_names(adata, meta["var_names"])
        cls.setup_anndata(adata, **meta["setup_args"])
        model = cls(adata, **meta["init_params"])
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        module_state = {k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")}
        model.module.load_state_dict(module_state)
        model._load_extra_state(meta, state)
        model.is_trained_ = bool(meta["is_trained"])
        model.history_ = pd.DataFrame(meta["history"]) if meta["history"] else None
        model.to_device(resolve_device(accelerator))
        return model

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._module_kwargs.items())
        state = "trained" if self.is_trained_ else "not trained"
        epochs = f", {len(self.history_)} epochs" if self.history_ is not None else ""
        return f"{type(self).__name__}({params}) on {self.adata.n_obs} x {self.adata.n_vars}; {state}{epochs}"


def _check_var_names(adata: AnnData, var_names) -> None:
    names = np.asarray(adata.var_names).astype(str)
    expected = np.asarray(var_names).astype(str)
    if len(names) != len(expected) or not (names == expected).all():
        missing = len(set(expected) - set(names))
        msg = (
            f"The genes of `adata` ({len(names)}) do not match the model's ({len(expected)}; {missing} missing, "
            "or a different order). Subset and order adata with `adata[:, model_var_names]`."
        )
        raise ValueError(msg)
