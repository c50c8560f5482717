"""The training plans: what one optimisation step of each model computes (Lightning modules).

Each plan wraps a torch module of :mod:`gearsx.module` and holds its losses' schedule, logging and
optimiser; :func:`~gearsx.train.fit_lightning` runs it.
"""

from __future__ import annotations

import lightning.pytorch as lp
import numpy as np
import torch

from gearsx.module import geo_loss, principal_coords

__all__ = ["EncoderTrainingPlan", "GearsTrainingPlan", "GraphAutoencoderTrainingPlan"]

#: Noise caps of the refiner curriculum (units of s_d), one per stage of the refiner phase.
SIGMA_CAPS = (0.5, 1.0, 2.0, 3.0)


def _set_metrics(pred: list[np.ndarray], true: list[np.ndarray]) -> dict[str, float]:
    """Mean recall@15 and Spearman of distances over sets (numpy, via :mod:`gearsx.metrics`)."""
    from gearsx.metrics import distance_correlation, knn_overlap

    rec = [knn_overlap(p, t, k=min(15, len(t) - 1)) for p, t in zip(pred, true, strict=True)]
    rho = [distance_correlation(p, t) for p, t in zip(pred, true, strict=True)]
    return {"recall15": float(np.mean(rec)), "spearman": float(np.mean(rho))}


class GearsTrainingPlan(lp.LightningModule):
    """Training plan of :class:`gearsx.module.GearsModule` (minisets in, geometry losses out).

    The refiner joins at ``refine_start`` (a fraction of ``total_steps``), with its noise cap raised
    in stages (``SIGMA_CAPS``: 0.5, 1, 2, 3); AdamW with a linear warm-up and a cosine decay to 10%.
    Validation scores the generator alone (``val_base_*``) and with refinement (``val_*``).
    """

    def __init__(
        self,
        module,
        *,
        kind: str,
        lr: float,
        weight_decay: float,
        total_steps: int,
        refine_start: float,
        loss_weights: dict,
        refine_steps: int,
        sigma_start,
    ) -> None:
        super().__init__()
        self.module = module
        self.kind, self.lr, self.weight_decay, self.total_steps = kind, lr, weight_decay, total_steps
        self.refine_start, self.loss_weights = refine_start, loss_weights
        self.refine_steps, self.sigma_start = refine_steps, sigma_start

    def _progress(self) -> float:  # fraction of the planned steps done
        return self.global_step / max(self.total_steps, 1)

    def training_step(self, batch, batch_idx):
        """Compute the geometry losses of one batch of minisets (refiner terms once it is on) and log them."""
        p = self._progress()
        refiner_on = p >= self.refine_start
        stage = int(np.clip((p - self.refine_start) / max(1 - self.refine_start, 1e-9) * len(SIGMA_CAPS), 0, 3))
        out = self.module.loss(
            batch["h"],
            batch["targets"],
            batch["factor"],
            pairs=batch["pairs"],
            kind=self.kind,
            refiner_on=refiner_on,
            sigma_cap=SIGMA_CAPS[stage],
            weights=self.loss_weights,
        )
        n_sets = batch["h"].shape[0]
        self.log_dict({f"train_{k}": v for k, v in out.as_dict().items()}, on_epoch=True, batch_size=n_sets)
        self.log("sigma_data", float(self.module.sigma_data), on_epoch=True, batch_size=n_sets)
        return out.total

    def validation_step(self, batch, batch_idx):
        """Score the predicted geometry of held-out minisets (recall@15, Spearman, ``L_geo``)."""
        t = batch["targets"]
        gen = torch.Generator().manual_seed(batch_idx)
        v, vb = self.module(
            batch["h"], t.mask, refine_steps=self.refine_steps, sigma_start=self.sigma_start, generator=gen
        )
        n = t.mask.sum(1).tolist()
        true = [t.coords[i, : n[i]].cpu().numpy() for i in range(len(n))]
        for name, out in (("", v), ("base_", vb)):
            xy = principal_coords(out, t.mask)
            pred = [xy[i, : n[i]].cpu().double().numpy() for i in range(len(n))]
            logs = {f"val_{name}{k}": val for k, val in _set_metrics(pred, true).items()}
            logs[f"val_{name}L_geo"] = float(geo_loss(xy, t))
            self.log_dict(logs, on_epoch=True, batch_size=len(n))

    def configure_optimizers(self):
        """Return AdamW with a per-step linear warm-up and cosine decay."""
        total = self.total_steps
        opt = torch.optim.AdamW(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        warm = max(1, total // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(s / total, 1)))),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EncoderTrainingPlan(lp.LightningModule):
    """Training plan of :class:`gearsx.module.SharedEncoderModule` (VICReg + spatial InfoNCE), AdamW."""

    def __init__(self, module, *, lr: float, weight_decay: float, loss_kwargs: dict) -> None:
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.loss_kwargs = lr, weight_decay, loss_kwargs

    def training_step(self, batch, batch_idx):
        """Compute VICReg + InfoNCE on one slide batch and log the terms."""
        out = self.module.loss(batch["x"], batch["x_pos"], batch["slide"], **self.loss_kwargs)
        self.log_dict(
            {f"train_{k}": v for k, v in out.as_dict().items()},
            on_step=False,
            on_epoch=True,
            batch_size=len(batch["x"]),
        )
        return out.total

    def configure_optimizers(self):
        """Return AdamW."""
        return torch.optim.AdamW(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class GraphAutoencoderTrainingPlan(lp.LightningModule):
    """Training plan of :class:`gearsx.module.GraphAttentionAutoencoder`: mean squared reconstruction error, Adam.

    Gradients are clipped to norm ``grad_clip`` (the autoencoder sees the whole graph in every
    step, so one step is one epoch).
    """

    def __init__(self, module, *, lr: float, weight_decay: float, grad_clip: float = 5.0) -> None:
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip

    def training_step(self, batch, batch_idx):
        """Reconstruct the features of every node from the graph and log the error."""
        _, recon = self.module(batch["x"], batch["src"], batch["dst"])
        loss = torch.nn.functional.mse_loss(recon, batch["x"])
        self.log("train_total", loss, on_step=False, on_epoch=True, batch_size=len(batch["x"]))
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the gradient norm to ``grad_clip``."""
        self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    def configure_optimizers(self):
        """Return Adam with L2 weight decay."""
        return torch.optim.Adam(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
