"""The training plans: what one optimisation step of each model computes (Lightning modules).

Each plan wraps a torch module of :mod:`gearsx.module` and holds its losses' schedule, logging and
optimiser; :func:`~gearsx.train.fit_lightning` runs it.
"""

from __future__ import annotations

import lightning.pytorch as lp
import numpy as np
import torch

from gearsx.module import coral_loss, geo_loss, mmd_rbf, principal_coords, scan_loss, self_label_loss

__all__ = [
    "AdapterTrainingPlan",
    "EncoderTrainingPlan",
    "GearsTrainingPlan",
    "GraphAutoencoderTrainingPlan",
    "ScanTrainingPlan",
]

#: Smallest SC batch the adapter loss is computed on (CORAL and MMD need a few points); smaller tails are skipped.
ADAPTER_MIN_BATCH = 8

#: Noise caps of the refiner curriculum (units of s_d), one per stage of the refiner phase.
SIGMA_CAPS = (0.5, 1.0, 2.0, 3.0)


class _Plan(lp.LightningModule):
    """A plan whose training metrics are epoch means kept by the plan itself.

    ``self.log(..., on_epoch=True)`` on every step costs Lightning about 1.5 ms of bookkeeping, a
    seventh of an encoder step on CPU; the plan adds the detached values instead and the runner
    reads their means once per epoch (:meth:`pop_epoch_means`). Validation still logs through
    Lightning (a few batches per epoch).
    """

    def __init__(self) -> None:
        super().__init__()
        self._epoch_sums: dict[str, tuple[torch.Tensor, int]] = {}

    def add_to_epoch(self, values: dict[str, torch.Tensor | float], weight: int) -> None:
        """Add one step's ``values``, weighted by ``weight`` (its batch size), to the epoch's means."""
        for k, v in values.items():
            v = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            total, w = self._epoch_sums.get(k, (0.0, 0))
            self._epoch_sums[k] = (total + v * weight, w + weight)

    def pop_epoch_means(self) -> dict[str, float]:
        """Return the weighted means of the values added since the last call, and start a new epoch."""
        means = {k: float(total) / w for k, (total, w) in self._epoch_sums.items()}
        self._epoch_sums = {}
        return means


def _set_metrics(pred: list[np.ndarray], true: list[np.ndarray]) -> dict[str, float]:
    """Mean recall@15 and Spearman of distances over sets (numpy, via :mod:`gearsx.metrics`)."""
    from gearsx.metrics import distance_correlation, knn_overlap

    rec = [knn_overlap(p, t, k=min(15, len(t) - 1)) for p, t in zip(pred, true, strict=True)]
    rho = [distance_correlation(p, t) for p, t in zip(pred, true, strict=True)]
    return {"recall15": float(np.mean(rec)), "spearman": float(np.mean(rho))}


class GearsTrainingPlan(_Plan):
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
        self.add_to_epoch({f"train_{k}": v for k, v in out.as_dict().items()}, n_sets)
        self.add_to_epoch({"sigma_data": float(self.module.sigma_data)}, n_sets)
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

        def score(out: torch.Tensor) -> dict[str, float]:
            xy = principal_coords(out, t.mask)
            pred = [xy[i, : n[i]].cpu().double().numpy() for i in range(len(n))]
            return {**_set_metrics(pred, true), "L_geo": float(geo_loss(xy, t))}

        final = score(v)
        base = final if vb is v else score(vb)  # without a refiner the module returns the proposal itself
        for name, scores in (("", final), ("base_", base)):
            self.log_dict({f"val_{name}{k}": val for k, val in scores.items()}, on_epoch=True, batch_size=len(n))

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


class EncoderTrainingPlan(_Plan):
    """Training plan of :class:`gearsx.module.SharedEncoderModule` (VICReg + spatial InfoNCE), AdamW."""

    def __init__(self, module, *, lr: float, weight_decay: float, loss_kwargs: dict) -> None:
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.loss_kwargs = lr, weight_decay, loss_kwargs

    def training_step(self, batch, batch_idx):
        """Compute VICReg + InfoNCE on one slide batch and log the terms."""
        out = self.module.loss(batch["x"], batch["x_pos"], batch["slide"], **self.loss_kwargs)
        self.add_to_epoch({f"train_{k}": v for k, v in out.as_dict().items()}, len(batch["x"]))
        return out.total

    def configure_optimizers(self):
        """Return AdamW."""
        return torch.optim.AdamW(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class GraphAutoencoderTrainingPlan(_Plan):
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
        loss = self.module.reconstruction_error(batch["x"], batch["src"], batch["dst"], batch.get("sq_norm"))
        self.add_to_epoch({"train_total": loss}, len(batch["x"]))
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the gradient norm to ``grad_clip``."""
        self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    def configure_optimizers(self):
        """Return Adam with L2 weight decay."""
        return torch.optim.Adam(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class AdapterTrainingPlan(_Plan):
    """Training plan of :class:`gearsx.module.LinearAdapter`: CORAL + RBF-MMD to the ST embeddings, Adam.

    Each step maps a batch of SC embeddings, keeps them on the ST support (``support``: the
    orthogonal projector onto the directions in which the ST embeddings vary, about their mean
    ``center``), and compares them with as many ST embeddings drawn at random; an identity term
    ``(||W - W0||^2 + ||b - b0||^2) / d`` keeps the map near its closed-form start.
    """

    def __init__(
        self,
        module,
        z_st: torch.Tensor,
        *,
        support: torch.Tensor,
        center: torch.Tensor,
        lr: float,
        w_coral: float,
        w_mmd: float,
        w_identity: float,
    ) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("z_st", z_st)
        self.register_buffer("support", support)
        self.register_buffer("center", center)
        self.register_buffer("w0", module.weight.detach().clone())
        self.register_buffer("b0", module.bias.detach().clone())
        self.lr, self.w_coral, self.w_mmd, self.w_identity = lr, w_coral, w_mmd, w_identity

    def on_support(self, z: torch.Tensor) -> torch.Tensor:
        """Project ``z`` onto the ST support (about the ST mean)."""
        return (z - self.center) @ self.support + self.center

    def training_step(self, batch, batch_idx):
        """Alignment loss of one SC batch against a random ST batch of the same size."""
        (z_sc,) = batch
        if len(z_sc) < ADAPTER_MIN_BATCH:
            return None
        a = self.on_support(self.module(z_sc))
        b = self.z_st[torch.randint(len(self.z_st), (len(a),), device=self.z_st.device)]
        drift = ((self.module.weight - self.w0) ** 2).sum() + ((self.module.bias - self.b0) ** 2).sum()
        loss = self.w_coral * coral_loss(a, b) + self.w_mmd * mmd_rbf(a, b) + self.w_identity * drift / len(self.b0)
        self.add_to_epoch({"train_total": loss}, len(a))
        return loss

    def configure_optimizers(self):
        """Return Adam."""
        return torch.optim.Adam(self.module.parameters(), lr=self.lr)


class ScanTrainingPlan(_Plan):
    """Training plan of :class:`gearsx.module.ScanHead`: SCAN's two phases on fixed features, Adam.

    Batches are row indices into ``features``. ``phase='scan'``: each point and one of its mined
    ``neighbors`` (drawn at random) should get the same cluster, both views perturbed
    (:func:`gearsx.module.scan_loss`, summed over the heads). ``phase='self_label'``: confident
    predictions of head ``head`` on the clean features become targets for a strongly perturbed view
    (:func:`gearsx.module.self_label_loss`); a batch without a confident point is skipped. The
    perturbation is Gaussian noise (``noise`` x unit std, x2 for the strong view) and 10% feature
    dropout (20% strong), the vector analogue of SCAN's image augmentations.
    """

    def __init__(
        self,
        module,
        features: torch.Tensor,
        neighbors: torch.Tensor,
        *,
        phase: str,
        lr: float,
        noise: float,
        entropy_weight: float = 5.0,
        threshold: float = 0.99,
        head: int = 0,
    ) -> None:
        super().__init__()
        if phase not in ("scan", "self_label"):
            msg = f"`phase` must be 'scan' or 'self_label'; got {phase!r}."
            raise ValueError(msg)
        self.module = module
        self.register_buffer("features", features)
        self.register_buffer("neighbors", neighbors)
        self.phase, self.lr, self.noise = phase, lr, noise
        self.entropy_weight, self.threshold, self.head = entropy_weight, threshold, head
        self.n_confident = 0  # confident points in the last self-labelling epoch

    def perturb(self, t: torch.Tensor, scale: float) -> torch.Tensor:
        """Dropout of ``10% x scale`` of the entries (rescaled) plus Gaussian noise of ``scale x noise``."""
        keep = (torch.rand_like(t) > 0.1 * scale).float() / (1 - 0.1 * scale)
        return t * keep + scale * self.noise * torch.randn_like(t)

    def on_train_epoch_start(self):
        """Reset the count of confident points."""
        self.n_confident = 0

    def training_step(self, batch, batch_idx):
        """One SCAN or self-labelling step on the points ``batch``."""
        (idx,) = batch
        x = self.features[idx]
        if self.phase == "scan":
            col = torch.randint(self.neighbors.shape[1], (len(idx),), device=idx.device)
            pick = self.neighbors[idx, col]
            total, _, _ = scan_loss(
                self.module(self.perturb(x, 1.0)),
                self.module(self.perturb(self.features[pick], 1.0)),
                entropy_weight=self.entropy_weight,
            )
            loss = total.sum()
        else:
            weak = self.module(x)[:, self.head]
            loss, n_conf = self_label_loss(
                weak, self.module(self.perturb(x, 2.0))[:, self.head], threshold=self.threshold
            )
            self.n_confident += n_conf
            if n_conf == 0:
                return None
        self.add_to_epoch({"train_total": loss}, len(idx))
        return loss

    def configure_optimizers(self):
        """Return Adam (weight decay 1e-4)."""
        return torch.optim.Adam(self.module.parameters(), lr=self.lr, weight_decay=1e-4)
