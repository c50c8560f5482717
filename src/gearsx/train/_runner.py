"""The one training runner of gearsx: a seeded, quiet Lightning fit with a per-epoch progress bar."""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as lp
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from gearsx._settings import settings
from gearsx._utils import progress_bar, resolve_device

__all__ = ["EpochProgress", "fit_lightning"]

#: Validation metrics shown next to the loss in the progress bar.
_SHOWN_VAL = ("val_spearman", "val_recall15")
_QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


class EpochProgress(Callback):
    """One tqdm bar per fit, updated per epoch with the loss in the postfix; appends each epoch's metrics to ``history``."""

    def __init__(self, max_epochs: int, history: list[dict[str, float]], *, enabled: bool) -> None:
        self.max_epochs, self.history, self.enabled = max_epochs, history, enabled

    def on_train_start(self, trainer, pl_module):
        """Open the bar."""
        self.bar = progress_bar(total=self.max_epochs, desc="training", unit="epoch", enabled=self.enabled)

    def on_train_epoch_end(self, trainer, pl_module):
        """Record the epoch's metrics and advance the bar."""
        row = {k: float(v) for k, v in trainer.callback_metrics.items()}  # validation (logged through Lightning)
        if hasattr(pl_module, "pop_epoch_means"):  # gearsx's plans keep their training means; others self.log them
            row |= pl_module.pop_epoch_means()
        self.history.append(row)
        post = {"loss": f"{row.get('train_total', float('nan')):.4f}"}
        post |= {k[4:]: f"{v:.3f}" for k, v in row.items() if k in _SHOWN_VAL}
        self.bar.set_postfix(post)
        self.bar.update(1)

    def on_train_end(self, trainer, pl_module):
        """Close the bar."""
        self.bar.close()


def fit_lightning(
    plan: lp.LightningModule,
    loader,
    *,
    max_epochs: int,
    accelerator: str,
    devices,
    progress: bool | None,
    random_state: int,
    reinitialise: bool,
    val_loader=None,
) -> tuple[pd.DataFrame, torch.device]:
    """Fit ``plan`` under a forked, seeded torch RNG; returns the per-epoch metrics and the device used.

    With ``reinitialise`` the plan's module is re-initialised from the seed first (an untrained
    model), so that training is reproducible whatever happened to the global RNG before.
    Lightning's banners and tips are silenced for the duration of the fit.
    """
    device = resolve_device(accelerator)
    history: list[dict[str, float]] = []
    bar = EpochProgress(max_epochs, history, enabled=settings.progress_bar if progress is None else progress)
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Lightning 2.6 warns about a torch pytree API on every fit; nothing for users to act on.
            warnings.filterwarnings("ignore", message=".*treespec.*")
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # validation=None is allowed
            # plans skip a step by returning None (a batch too small for the loss, no confident point)
            warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
            # the batches are tensors in memory: worker processes would copy them, not speed them up
            # (Lightning says so on every fit on a machine of more than two cores)
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # the device is gearsx's choice (`accelerator`, or the CPU for the adapter's small map), not an oversight
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
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
                if reinitialise:
                    for m in plan.module.modules():
                        if hasattr(m, "reset_parameters"):
                            m.reset_parameters()
                trainer.fit(plan, train_dataloaders=loader, val_dataloaders=val_loader)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    frame = pd.DataFrame(history)
    frame.index.name = "epoch"
    return frame, device
