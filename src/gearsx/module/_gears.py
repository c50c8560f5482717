"""The GEARS geometry network (see :ref:`gears-geometry-model`): context encoder, generator, optional residual EDM refiner.

Pure torch, no AnnData. Sets are padded batches ``(B, n, .)`` with a boolean mask
``(B, n)``; every block is permutation-equivariant over the valid elements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from gearsx._utils import check_nonnegative_number

from ._blocks import MLP
from ._geometry_losses import TargetBatch, geo_loss, gram_loss
from ._set_losses import (
    align_to,
    factor_regression_loss,
    knn_edge_loss,
    log_scale_loss,
    masked_center,
    nca_knn_loss,
    overlap_gram_loss,
    target_knn,
)
from ._set_transformer import ISAB, PMA
from ._structure import StructureModule, dense_bias, gate_losses, one_step_operator

__all__ = ["GearsLossOutput", "GearsModule", "principal_coords"]

_N_FOURIER = 16
#: What may follow the generator: nothing (``None``, the default), the residual EDM refiner, or the IPA-style
#: structure module.
STRUCTURES = (None, "refiner", "ipa")
#: The refiner's layers, built only with ``structure='refiner'`` (earlier versions built them for every model).
REFINER_LAYERS = ("ref_in", "noise_emb", "ref_blocks", "ref_head")


#: Default weight of each weighted loss term, by the part of the model it trains: the generator (every
#: model), the diffusion refiner (``structure='refiner'``) or the structure module (``structure='ipa'``).
LOSS_WEIGHTS: dict[str | None, dict[str, float]] = {
    None: {"gen_gram": 1.0, "gen_scale": 0.1},
    "refiner": {"denoise": 1.0, "ref_gram": 1.0, "ref_scale": 0.1, "nca": 0.1, "edge": 0.1, "overlap": 0.5},
    "ipa": {"structure": 1.0, "gate_joint": 0.05, "gate_trust": 1e-3},
}


def check_loss_weights(weights: dict[str, float] | None, structure: str | None) -> dict[str, float]:
    """Return ``weights`` checked against the terms a model with ``structure`` trains, or raise naming the key.

    A key of another part of the model (a refiner's term for a model without one) or a misspelt key
    would change nothing, and a negative weight would reward the error it should penalise.
    """
    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        msg = f"`loss_weights` must be a dict of term names to weights; got {type(weights).__name__}."
        raise TypeError(msg)
    known = LOSS_WEIGHTS[None] | (LOSS_WEIGHTS[structure] if structure is not None else {})
    for name, value in weights.items():
        if name not in known:
            elsewhere = [part for part, terms in LOSS_WEIGHTS.items() if part is not None and name in terms]
            why = (
                f"it trains the structure={elsewhere[0]!r} part, which this model (structure={structure!r}) has not"
                if elsewhere
                else "no such term"
            )
            msg = f"`loss_weights` key {name!r} would change nothing: {why}. Terms of this model: {sorted(known)}."
            raise ValueError(msg)
        check_nonnegative_number(value, name=f"loss_weights[{name!r}]")
    return {name: float(value) for name, value in weights.items()}


@dataclass
class GearsLossOutput:
    """Loss terms of :class:`~gearsx.module.GearsModule` (``total`` is the weighted sum; refiner terms are 0 before it starts, and without one)."""

    total: torch.Tensor
    generator: torch.Tensor
    gen_regression: torch.Tensor
    gen_gram: torch.Tensor
    gen_scale: torch.Tensor
    refiner: torch.Tensor
    denoise: torch.Tensor
    ref_gram: torch.Tensor
    ref_scale: torch.Tensor
    nca: torch.Tensor
    edge: torch.Tensor
    overlap: torch.Tensor
    gate_kl: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    gate_rank: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    gate_trust: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    structure: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    def as_dict(self) -> dict[str, float]:
        """Detached float values, for logging."""
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def _top_coords(v: torch.Tensor, mask: torch.Tensor, n_components: int = 2) -> torch.Tensor:
    """First principal coordinates of each centred set at their own scale (``U_k S_k``)."""
    u, s, _ = torch.linalg.svd(masked_center(v, mask), full_matrices=False)
    return u[..., :n_components] * s[:, None, :n_components]


def principal_coords(v: torch.Tensor, mask: torch.Tensor, n_components: int = 2) -> torch.Tensor:
    """First principal axes of each centred set, scaled to unit RMS norm: ``(B, n, d) -> (B, n, n_components)``.

    The sign of each axis is fixed (largest-magnitude entry positive) so the output is
    deterministic. Padding rows are 0.
    """
    y = _top_coords(v.double(), mask, n_components)
    idx = y.abs().argmax(1, keepdim=True)
    sign = torch.sign(torch.gather(y, 1, idx))
    y = y * torch.where(sign == 0, torch.ones_like(sign), sign)
    m = mask.unsqueeze(-1).to(y.dtype)
    rms = torch.sqrt(((y**2).sum(-1, keepdim=True) * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1))
    return (y / rms.clamp_min(1e-12)).to(v.dtype)


class GearsModule(nn.Module):
    """Permutation-equivariant set network mapping miniset embeddings to a ``d``-dimensional geometry.

    * Context encoder: linear projection of the embeddings + ``n_context_blocks`` ISAB
      blocks + a PMA summary token added back to every element.
    * Generator: ``n_generator_blocks`` ISAB blocks + MLP head -> ``V_base`` ``(n, d)``, centred.
    * Optional residual refiner (``structure='refiner'``): an EDM-preconditioned denoiser of the
      residual ``R`` between the (Procrustes-aligned) target factor and ``V_base``:
      ``D(R_t; s) = c_skip R_t + c_out F(c_in R_t; c_noise, V_base, context, self-cond)``,
      with ``s_d`` (buffer ``sigma_data``) the running std of the residuals.

    Parameters
    ----------
    n_input
        Embedding width.
    dim
        Token width.
    n_out
        Output dimension ``d`` of the geometry (over-complete; 2-D coordinates are its
        first two principal axes).
    n_heads, n_inducing
        Attention heads and ISAB inducing points.
    n_context_blocks, n_generator_blocks, n_refiner_blocks
        ISAB blocks of each part.
    structure
        ``None``: the generator alone (no refiner layers are built; the output is ``V_base``).
        ``'refiner'``: the residual EDM refiner above. ``'ipa'``: the generator's first two
        principal coordinates are refined by a :class:`~gearsx.module.StructureModule`
        (Topo-IPA-R with a learned topology gate) instead; the output is then 2-D.
    n_recycles, k_candidates
        Recycles and candidate-graph neighbours of the structure module (``structure='ipa'``).
    """

    def __init__(
        self,
        n_input: int,
        *,
        dim: int = 128,
        n_out: int = 32,
        n_heads: int = 4,
        n_inducing: int = 32,
        n_context_blocks: int = 2,
        n_generator_blocks: int = 2,
        n_refiner_blocks: int = 2,
        structure: str | None = None,
        n_recycles: int = 5,
        k_candidates: int = 100,
    ) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            msg = f"`structure` must be None, 'refiner' or 'ipa'; got {structure!r}."
            raise ValueError(msg)
        self.n_out, self.structure_kind = n_out, structure
        self._gate_snapshot: list[torch.Tensor] | None = None
        self.inp = nn.Sequential(nn.Linear(n_input, dim), nn.LayerNorm(dim))
        self.context_blocks = nn.ModuleList([ISAB(dim, n_inducing, n_heads) for _ in range(n_context_blocks)])
        self.pool = PMA(dim, 1, n_heads)
        self.pool_proj = nn.Linear(dim, dim)
        self.gen_blocks = nn.ModuleList([ISAB(dim, n_inducing, n_heads) for _ in range(n_generator_blocks)])
        self.gen_head = MLP(dim, (dim,), n_out)
        if structure == "refiner":
            self.ref_in = nn.Linear(3 * n_out, dim)
            self.noise_emb = nn.Sequential(nn.Linear(2 * _N_FOURIER, dim), nn.GELU(), nn.Linear(dim, dim))
            self.ref_blocks = nn.ModuleList([ISAB(dim, n_inducing, n_heads) for _ in range(n_refiner_blocks)])
            self.ref_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_out))
        self.register_buffer("freqs", torch.arange(1, _N_FOURIER + 1, dtype=torch.float32) * math.pi / 2)
        self.register_buffer("sigma_data", torch.zeros(()))
        self.structure = (
            StructureModule(n_input, dim, n_heads=n_heads, n_recycles=n_recycles, k_candidates=k_candidates)
            if structure == "ipa"
            else None
        )

    # --- forward parts ---------------------------------------------------------------------------
    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Context tokens ``(B, n, dim)`` of embeddings ``h`` ``(B, n, n_input)``."""
        m = mask.unsqueeze(-1).to(h.dtype)
        c = self.inp(h) * m
        for block in self.context_blocks:
            c = c + block(c, mask)
        return (c + self.pool_proj(self.pool(c, mask))) * m

    def generate(self, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Propose ``V_base`` ``(B, n, d)``, centred over the valid points."""
        x = c
        for block in self.gen_blocks:
            x = x + block(x, mask)
        return masked_center(self.gen_head(x), mask)

    def _precond(self, sigma: torch.Tensor):
        sd = self.sigma_data.clamp_min(1e-6)
        s = sigma[:, None, None]
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        c_in = 1.0 / torch.sqrt(s**2 + sd**2)
        c_noise = torch.log(sigma.clamp_min(1e-12)) / 4.0
        return c_skip, c_out, c_in, c_noise

    def denoise(
        self,
        r_t: torch.Tensor,
        sigma: torch.Tensor,
        v_base: torch.Tensor,
        c: torch.Tensor,
        mask: torch.Tensor,
        r_self: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """EDM denoiser of the residual: noisy ``r_t`` ``(B, n, d)`` at noise ``sigma`` ``(B,)`` -> clean estimate."""
        c_skip, c_out, c_in, c_noise = self._precond(sigma)
        r_self = torch.zeros_like(r_t) if r_self is None else r_self
        ang = c_noise[:, None] * self.freqs[None, :]
        emb = self.noise_emb(torch.cat([torch.sin(ang), torch.cos(ang)], -1))
        x = c + self.ref_in(torch.cat([c_in * r_t, v_base, r_self], -1)) + emb[:, None, :]
        m = mask.unsqueeze(-1).to(x.dtype)
        x = x * m
        for block in self.ref_blocks:
            x = x + block(x, mask)
        f = self.ref_head(x)
        return masked_center(c_skip * r_t + c_out * f, mask)

    def refine(
        self,
        v_base: torch.Tensor,
        c: torch.Tensor,
        mask: torch.Tensor,
        *,
        steps: int = 4,
        sigma_start: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Short deterministic EDM refinement from moderate noise around ``V_base``.

        Starts from ``R = sigma_start * s_d * eps`` and integrates the probability-flow
        ODE with Euler steps on a Karras schedule (``rho = 7``) down to ``0.05 s_d``,
        with self-conditioning on the previous estimate; returns ``V_base + R``.
        ``sigma_start`` is in units of ``s_d``. With ``steps=0``, without a refiner
        (``structure`` not ``'refiner'``) or with an untrained one (``s_d = 0``) ``V_base`` is returned.
        """
        sd = float(self.sigma_data)
        if steps <= 0 or sd <= 0 or self.structure_kind != "refiner":
            return v_base
        s_max, s_min, rho = sigma_start * sd, 0.05 * sd, 7.0
        ramp = torch.linspace(0, 1, steps, dtype=v_base.dtype, device=v_base.device)
        sigmas = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
        noise = torch.randn(v_base.shape, generator=generator, dtype=v_base.dtype, device="cpu").to(v_base.device)
        r = masked_center(noise * sigmas[0], mask)
        r_self = None
        for i in range(steps):
            s = sigmas[i].expand(v_base.shape[0])
            d = self.denoise(r, s, v_base, c, mask, r_self)
            r = r + (sigmas[i + 1] - sigmas[i]) * (r - d) / sigmas[i]
            r_self = d
        return v_base + r

    def forward(
        self,
        h: torch.Tensor,
        mask: torch.Tensor,
        *,
        refine_steps: int = 4,
        sigma_start: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict ``(V, V_base)``: refined (``(B, n, 2)`` with ``structure='ipa'``) and generator-only geometries."""
        c = self.encode(h, mask)
        v_base = self.generate(c, mask)
        if self.structure is not None:
            xs, _, _, _ = self.structure.forward_inference(h, c, _top_coords(v_base, mask), mask)
            return xs[-1], v_base
        v = self.refine(v_base, c, mask, steps=refine_steps, sigma_start=sigma_start, generator=generator)
        return v, v_base

    def attention(
        self, h: torch.Tensor, mask: torch.Tensor, *, coords: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Attention of the structure module per recycle (``structure='ipa'`` only).

        Without ``coords`` the inference path (candidate graph + gate); with the true ``coords``
        ``(B, n, 2)`` the oracle path (true spatial edges, gate off). Returns
        ``(coordinates per recycle, attention (B, H, n, n) per recycle, graph (B, n, n))``.
        """
        if self.structure is None:
            msg = "attention weights exist only for structure='ipa' (the refiner has no graph attention)."
            raise ValueError(msg)
        c = self.encode(h, mask)
        x0 = _top_coords(self.generate(c, mask), mask)
        if coords is None:
            xs, attns, _, adj = self.structure.forward_inference(h, c, x0, mask, return_attention=True)
        else:
            xs, attns, adj = self.structure.forward_oracle(c, x0, coords, mask, return_attention=True)
        return xs, attns, adj

    def _structure_terms(self, h, c, v_base, targets, structure_fn, refiner_on, w) -> dict[str, torch.Tensor]:
        """Gate losses (always) and, once ``refiner_on``, the deeply supervised structure loss + trust region."""
        mask = targets.mask
        st = self.structure
        adj, nbr, nbr_mask, g = st.gate_logits(h, mask)
        if targets.rw_powers is not None and targets.adjacency is not None:
            t1, true_adj = targets.rw_powers[:, 0], targets.adjacency.bool()
        else:
            t1, true_adj = one_step_operator(targets.coords, mask)
        kl, rank = gate_losses(g, nbr, nbr_mask, t1, true_adj)
        zero = h.new_zeros(())
        out = {"gate_kl": kl, "gate_rank": rank, "gate_trust": zero, "structure": zero}
        if not refiner_on:  # phase 1: gate pretraining
            out["total"] = kl + rank
            return out
        params = list(st.gate.parameters())
        if self._gate_snapshot is None or len(self._gate_snapshot) != len(params):
            self._gate_snapshot = [p.detach().clone() for p in params]
        out["gate_trust"] = sum(((p - p0) ** 2).sum() for p, p0 in zip(params, self._gate_snapshot, strict=True))
        xs, _ = st.run(c, _top_coords(v_base.detach(), mask), adj, mask, dense_bias(adj, nbr, nbr_mask, g).detach())
        rw = torch.arange(1, len(xs) + 1, dtype=h.dtype, device=h.device)
        rw = rw / rw.sum()
        out["structure"] = sum(wr * structure_fn(x, targets) for wr, x in zip(rw, xs, strict=True))
        out["total"] = (
            w["structure"] * out["structure"] + w["gate_joint"] * (kl + rank) + w["gate_trust"] * out["gate_trust"]
        )
        return out

    # --- training --------------------------------------------------------------------------------
    def loss(
        self,
        h: torch.Tensor,
        targets: TargetBatch,
        factor: torch.Tensor,
        *,
        pairs: dict[str, torch.Tensor] | None = None,
        kind: str = "gram",
        refiner_on: bool = True,
        sigma_cap: float = 2.0,
        k_nca: int = 10,
        weights: dict[str, float] | None = None,
    ) -> GearsLossOutput:
        """Training losses (see :ref:`gears-geometry-model`) for a padded batch of minisets.

        Parameters
        ----------
        h
            Embeddings ``(B, n, n_input)``.
        targets
            Padded targets (``targets.mask`` gives the valid points).
        factor
            Target Gram factors ``(B, n, d)``.
        pairs
            ``shared_a``, ``shared_b``, ``shared_mask`` (``(P, m)``): sets ``0..P-1`` and
            ``P..2P-1`` of the batch are paired minisets; ``None`` for no pairs.
        kind
            ``'gram'``: generator trained by Procrustes regression + Gram + log-scale;
            ``'rw_stress'``: by ``L_geo`` + log-scale.
        refiner_on
            Train the refiner or the structure module (after the generator warm-up); without
            either (``structure=None``) nothing changes.
        sigma_cap
            Curriculum noise cap, in units of ``s_d``.
        k_nca
            Target neighbours of the NCA and edge losses.
        weights
            Overrides of the loss weights (keys as in :class:`GearsLossOutput`).
        """
        w = {name: value for part in LOSS_WEIGHTS.values() for name, value in part.items()}
        w |= weights or {}
        mask = targets.mask
        zero = h.new_zeros(())
        c = self.encode(h, mask)
        v_base = self.generate(c, mask)
        structure = geo_loss if kind == "rw_stress" else gram_loss
        if kind == "rw_stress":
            reg = zero
            gram_g = geo_loss(v_base, targets)
        else:
            reg = factor_regression_loss(v_base, factor, mask)
            gram_g = gram_loss(v_base, targets)
        scale_g = log_scale_loss(v_base, factor, mask)
        gen = reg + w["gen_gram"] * gram_g + w["gen_scale"] * scale_g
        terms = {"denoise": zero, "ref_gram": zero, "ref_scale": zero, "nca": zero, "edge": zero, "overlap": zero}
        ref = zero
        if self.structure is not None:
            extra = self._structure_terms(h, c, v_base, targets, structure, refiner_on, w)
            ref = extra.pop("total")
            terms |= extra
        elif refiner_on and self.structure_kind == "refiner":
            vb = v_base.detach()
            resid = masked_center(align_to(masked_center(factor, mask), vb, mask), mask) - vb
            m3 = mask.unsqueeze(-1).to(h.dtype)
            if self.training:
                with torch.no_grad():
                    batch_sd = torch.sqrt((resid**2 * m3).sum() / (m3.sum() * resid.shape[-1]))
                    sd_new = batch_sd if float(self.sigma_data) == 0 else 0.98 * self.sigma_data + 0.02 * batch_sd
                    self.sigma_data.copy_(sd_new)
            sd = self.sigma_data.clamp_min(1e-6)
            b = h.shape[0]
            # stratified log-uniform noise levels on [0.05 s_d, sigma_cap s_d]
            u = (torch.randperm(b, device=h.device).to(h.dtype) + torch.rand(b, device=h.device, dtype=h.dtype)) / b
            lo, hi = math.log(0.05), math.log(max(sigma_cap, 0.06))
            sigma = sd * torch.exp(lo + u * (hi - lo))
            r_t = masked_center(resid + sigma[:, None, None] * torch.randn_like(resid), mask)
            r_self = None
            if torch.rand(()) < 0.5:  # self-conditioning on a detached first estimate
                with torch.no_grad():
                    r_self = self.denoise(r_t, sigma, vb, c.detach(), mask)
            d = self.denoise(r_t, sigma, vb, c, mask, r_self)
            lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
            per_set = ((d - resid) ** 2 * m3).sum((1, 2)) / (m3.sum((1, 2)) * resid.shape[-1])
            v = vb + d
            knn = target_knn(targets.coords, mask, k_nca)
            terms["denoise"] = (lam * per_set).mean()
            terms["ref_gram"] = structure(v, targets)
            terms["ref_scale"] = log_scale_loss(v, factor, mask)
            terms["nca"] = nca_knn_loss(v, knn, mask)
            terms["edge"] = knn_edge_loss(v, targets.coords, knn, mask)
            if pairs is not None:
                p = pairs["shared_a"].shape[0]
                gate = ((sigma[:p] < sd) & (sigma[p : 2 * p] < sd)).to(h.dtype)
                ov = overlap_gram_loss(v[:p], v[p : 2 * p], pairs["shared_a"], pairs["shared_b"], pairs["shared_mask"])
                terms["overlap"] = (gate * ov).sum() / gate.sum().clamp_min(1.0)
            ref = sum(w[name] * value for name, value in terms.items())
        return GearsLossOutput(
            total=gen + ref,
            generator=gen,
            gen_regression=reg,
            gen_gram=gram_g,
            gen_scale=scale_g,
            refiner=ref,
            **terms,
        )
