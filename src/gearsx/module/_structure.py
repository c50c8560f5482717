"""Topo-IPA-R structure module with a learned topology gate (see :ref:`gears-geometry-model`).

Pure torch on padded miniset batches ``(B, n, .)`` with a boolean mask ``(B, n)``. Graphs on a
miniset are dense boolean ``(B, n, n)`` matrices: minisets hold at most a few hundred points, and
dense masked attention is cheaper on CPU than gathering per-edge values. Only the gate, which needs
per-edge features, works on padded neighbour lists.

Two evaluation paths share the recycled block but nothing else:

* inference (:meth:`StructureModule.forward_inference`): candidate edges = symmetrised cosine kNN of
  the embeddings, plus the gate's edge logits as an attention bias;
* oracle (:meth:`StructureModule.forward_oracle`): true spatial kNN edges from the target
  coordinates, gate off. It never builds, receives or reads the candidate graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._blocks import MLP
from ._set_losses import masked_center, masked_rms

__all__ = [
    "EdgeGate",
    "StructureModule",
    "candidate_graph",
    "dense_bias",
    "gate_losses",
    "neighbor_lists",
    "one_step_operator",
    "spatial_graph",
]


def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    n = mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    return mask[:, :, None] & mask[:, None, :] & ~eye


def _knn_adjacency(score: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetrised kNN by decreasing ``score`` ``(B, n, n)``; ties go to the lower index (stable sort)."""
    valid = _pair_mask(mask)
    score = score.masked_fill(~valid, -math.inf)
    k = max(1, min(k, score.shape[-1] - 1))
    order = torch.sort(-score, dim=-1, stable=True).indices[..., :k]
    adj = torch.zeros_like(valid)
    adj.scatter_(2, order, value=True)
    adj &= valid  # rows with fewer than k valid points picked padding or the diagonal
    return adj | adj.transpose(1, 2)


def candidate_graph(h: torch.Tensor, mask: torch.Tensor, k: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate edges of the inference path: symmetrised cosine kNN of the embeddings.

    Parameters
    ----------
    h
        Embeddings ``(B, n, F)``.
    mask
        Valid points ``(B, n)``.
    k
        Neighbours per point before symmetrisation (capped at ``n - 1``).

    Returns
    -------
    ``(adjacency, cosine)``: boolean ``(B, n, n)`` without the diagonal or padding, and the cosine
    similarities ``(B, n, n)``.
    """
    hn = F.normalize(h, dim=-1)
    cos = hn @ hn.transpose(1, 2)
    return _knn_adjacency(cos, mask, k), cos


def spatial_graph(coords: torch.Tensor, mask: torch.Tensor, k: int = 15) -> torch.Tensor:
    """Build the oracle path's true spatial edges: symmetrised kNN of target coordinates ``(B, n, 2)``."""
    d2 = torch.cdist(coords, coords).pow(2)
    return _knn_adjacency(-d2, mask, k)


def neighbor_lists(adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return padded neighbour lists of a boolean graph: indices and validity ``(B, n, K)``, K = max degree."""
    k = max(int(adj.sum(-1).max()), 1)
    order = torch.sort((~adj).to(torch.int8), dim=-1, stable=True).indices[..., :k]
    return order, adj.gather(2, order)


def one_step_operator(coords: torch.Tensor, mask: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """One-step random-walk operator ``T^1`` of target coordinates and its kNN adjacency.

    Gaussian kernel ``exp(-d_ij^2 / (s_i s_j))`` with ``s_i`` the distance to the ``k``-th
    neighbour, on the symmetrised kNN graph, row-normalised (the operator the ``rw_stress``
    targets use; computed here from coordinates so the gate can be trained with either target kind).
    """
    adj = spatial_graph(coords, mask, k)
    d = torch.cdist(coords, coords)
    kk = max(1, min(k, coords.shape[1] - 1))
    far = d.masked_fill(~_pair_mask(mask), math.inf)
    s = torch.sort(far, dim=-1).values[..., kk - 1]
    s = torch.where(torch.isfinite(s), s, torch.ones_like(s)).clamp_min(1e-8)
    w = torch.exp(-(d**2) / (s[:, :, None] * s[:, None, :])) * adj
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12), adj


def gate_losses(
    logits: torch.Tensor,
    nbr: torch.Tensor,
    nbr_mask: torch.Tensor,
    t1: torch.Tensor,
    true_adj: torch.Tensor,
    *,
    margin: float = 1.0,
    n_pairs: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate supervision: KL to ``T^1`` restricted to the candidates, and a margin ranking loss.

    Parameters
    ----------
    logits
        Gate edge logits ``(B, n, K)`` on the neighbour lists ``nbr`` / ``nbr_mask``.
    t1
        Target one-step operator ``(B, n, n)``.
    true_adj
        True spatial neighbours ``(B, n, n)``.
    margin
        Ranking margin: a true neighbour's logit should exceed a false candidate's by this much.
    n_pairs
        Sampled (true, false) candidate pairs per point.

    Returns
    -------
    ``(kl, rank)``: KL averaged over points with target mass on their candidates; hinge loss
    averaged over points with both a true and a false candidate (0 when there are none).
    """
    t = t1.gather(2, nbr) * nbr_mask
    row = t.sum(-1)
    ok = row > 1e-8
    p = t / row.clamp_min(1e-12).unsqueeze(-1)
    log_q = torch.log_softmax(logits.masked_fill(~nbr_mask, -1e9), dim=-1)
    kl_row = (p * (torch.log(p.clamp_min(1e-12)) - log_q)).masked_fill(~nbr_mask, 0.0).sum(-1)
    kl = (kl_row * ok).sum() / ok.sum().clamp_min(1)
    pos = true_adj.gather(2, nbr) & nbr_mask
    neg = ~pos & nbr_mask
    both = pos.any(-1) & neg.any(-1)
    if not bool(both.any()):
        return kl, logits.sum() * 0.0
    lp, ln = logits[both], logits[both]
    ip = torch.multinomial(pos[both].float(), n_pairs, replacement=True, generator=generator)
    ineg = torch.multinomial(neg[both].float(), n_pairs, replacement=True, generator=generator)
    rank = F.relu(margin - lp.gather(1, ip) + ln.gather(1, ineg)).mean()
    return kl, rank


def dense_bias(adj: torch.Tensor, nbr: torch.Tensor, nbr_mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Scatter edge logits on neighbour lists ``(B, n, K)`` into a dense ``(B, n, n)`` bias (0 off the lists)."""
    return torch.zeros(adj.shape, dtype=logits.dtype, device=logits.device).scatter(2, nbr, logits * nbr_mask)


def _gather_nodes(x: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """Per-node values ``(B, n, F)`` at neighbour lists ``(B, n, K)`` -> ``(B, n, K, F)``."""
    b, n, k = nbr.shape
    return torch.gather(x, 1, nbr.reshape(b, n * k, 1).expand(-1, -1, x.shape[-1])).reshape(b, n, k, -1)


def _edge_linear(
    lin: nn.Linear,
    nbr: torch.Tensor,
    parts: tuple[torch.Tensor, ...],
    nodes: tuple[torch.Tensor, ...] = (),
) -> torch.Tensor:
    """``lin`` applied to the concatenation ``[*nodes_i, *nodes_j, *parts]`` without building it.

    A linear map of a concatenation is the sum of its blocks' maps, and a per-node block commutes
    with the gather to the edges: ``W [p_i, p_j] = (W_1 p)_i + (W_2 p)_j``. Node blocks are thus
    projected once per node (``n`` rows) instead of once per edge (``n K`` rows), and the wide
    edge-feature tensor is never materialised — the gate's main cost on CPU.
    """
    w, out, col = lin.weight, 0.0, 0
    for x in nodes:  # receiver blocks (i), then sender blocks (j)
        f = x.shape[-1]
        out = out + F.linear(x, w[:, col : col + f])[:, :, None]
        col += f
    for x in nodes:
        f = x.shape[-1]
        out = out + _gather_nodes(F.linear(x, w[:, col : col + f]), nbr)
        col += f
    for x in parts:
        f = x.shape[-1]
        out = out + F.linear(x, w[:, col : col + f])
        col += f
    return out + lin.bias if lin.bias is not None else out


class _GateLayer(nn.Module):
    """GATv2-style attention over padded neighbour lists with edge features, residual + LayerNorm."""

    def __init__(self, dim: int, n_edge: int) -> None:
        super().__init__()
        self.src, self.dst, self.edge = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(n_edge, dim)
        self.att = nn.Linear(dim, 1, bias=False)
        self.val = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, p, nbr, nbr_mask, edge_parts):
        z = self.src(p)[:, :, None] + _gather_nodes(self.dst(p), nbr) + _edge_linear(self.edge, nbr, edge_parts)
        e = self.att(F.leaky_relu(z, 0.2)).squeeze(-1)
        a = torch.softmax(e.masked_fill(~nbr_mask, -1e9), dim=-1) * nbr_mask
        return self.norm(p + (a.unsqueeze(-1) * _gather_nodes(self.val(p), nbr)).sum(2))


class EdgeGate(nn.Module):
    """Contextual topology gate: edge logits ``g_ij`` on candidate edges from two graph-attention layers.

    Edge features ``[p_i, p_j, |p_i - p_j|, p_i * p_j, cos(h_i, h_j)]`` of projected embeddings
    ``p``; logits are soft-clipped to ``(-clip, clip)`` by ``clip * tanh(x / clip)``. Linear maps of
    node features are applied per node and gathered to the edges (see ``_edge_linear``).
    """

    def __init__(self, n_input: int, *, dim: int = 16, n_layers: int = 2, clip: float = 6.0) -> None:
        super().__init__()
        self.clip = clip
        self.proj = nn.Sequential(nn.Linear(n_input, dim), nn.LayerNorm(dim))
        self.layers = nn.ModuleList([_GateLayer(dim, 2 * dim + 1) for _ in range(n_layers)])
        self.out = MLP(4 * dim + 1, (2 * dim,), 1)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, nbr: torch.Tensor, nbr_mask: torch.Tensor) -> torch.Tensor:
        """Edge logits ``(B, n, K)`` (0 on padding entries)."""
        c = cos.gather(2, nbr).unsqueeze(-1)
        p = self.proj(h)

        def pair_parts(p):
            pj = _gather_nodes(p, nbr)
            pi = p[:, :, None]
            return (pi - pj).abs(), pi * pj

        for layer in self.layers:
            p = layer(p, nbr, nbr_mask, (*pair_parts(p), c))
        first, *rest = self.out.net
        z = _edge_linear(first, nbr, (*pair_parts(p), c), nodes=(p,))
        g = nn.Sequential(*rest)(z).squeeze(-1)
        return (self.clip * torch.tanh(g / self.clip)) * nbr_mask


class StructureModule(nn.Module):
    """Weight-shared attention block recycled ``n_recycles`` times over a graph of the miniset.

    Per recycle ``r`` and head ``h``, over the graph's edges (plus self-loops):
    ``logit_ij = s_h <q_i/|q_i|, k_j/|k_j|> + beta_r g_ij + clip(RBF_h(|x_i - x_j| / rms(x)))``, the
    gate term only on the inference path and the distance term from the second recycle on. Features
    are updated by the attention output and an MLP; coordinates by
    ``dx_i = eta_r sum_h A_h sum_j a^h_ij (x_j - x_i)`` with zero-initialised 2 x 2 matrices
    ``A_h = a_h I + b_h J`` (``J`` the quarter turn: a rotation-scaling, the 2 x 2 matrices that
    commute with rotations; an untrained module returns its input), then re-centred (gauge fix;
    rotation and reflection are invisible to the intrinsic losses). Features never see
    coordinates, only distances do through the bias, so the whole update is equivariant to
    rotations of ``x``. ``beta_r = beta (1 - r / (2 (R - 1)))``
    decays from ``beta`` to ``beta / 2`` as the distance bias takes over.

    Parameters
    ----------
    n_input
        Embedding width (gate input).
    dim
        Feature width (the context tokens of :class:`~gearsx.module.GearsModule`).
    n_heads
        Attention heads.
    n_recycles
        Recycles of the shared block.
    k_candidates
        Neighbours per point of the candidate graph.
    k_oracle
        Neighbours per point of the oracle (true spatial) graph.
    beta
        Gate-bias scale.
    n_rbf, rbf_clip
        Radial basis functions of the distance bias and its clipping.
    """

    def __init__(
        self,
        n_input: int,
        dim: int,
        *,
        n_heads: int = 4,
        n_recycles: int = 5,
        k_candidates: int = 100,
        k_oracle: int = 15,
        beta: float = 2.0,
        n_rbf: int = 8,
        rbf_clip: float = 3.0,
        gate_dim: int = 16,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            msg = f"`dim`={dim} must be divisible by `n_heads`={n_heads}."
            raise ValueError(msg)
        self.n_heads, self.n_recycles, self.dh = n_heads, n_recycles, dim // n_heads
        self.k_candidates, self.k_oracle, self.beta, self.rbf_clip = k_candidates, k_oracle, beta, rbf_clip
        self.gate = EdgeGate(n_input, dim=gate_dim)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = nn.LayerNorm(self.dh), nn.LayerNorm(self.dh)
        self.log_scale = nn.Parameter(torch.full((n_heads,), math.log(5.0)))
        self.out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.LayerNorm(dim), MLP(dim, (2 * dim,), dim))
        self.register_buffer("rbf_centers", torch.linspace(0.0, 3.0, n_rbf))
        self.rbf_width = 3.0 / max(n_rbf - 1, 1)
        self.register_buffer("_centers_w", self.rbf_centers / self.rbf_width, persistent=False)
        self.rbf = nn.Parameter(torch.zeros(n_heads, n_rbf))
        self.coord = nn.Parameter(torch.zeros(n_heads, 2))  # (a_h, b_h) of A_h = a_h I + b_h J
        self.register_buffer("_basis", torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, -1.0], [1.0, 0.0]]]))
        self.step = nn.Parameter(torch.ones(n_recycles))

    def _beta(self, r: int) -> float:
        return self.beta * (1.0 - r / (2.0 * max(self.n_recycles - 1, 1)))

    def run(
        self,
        c: torch.Tensor,
        x0: torch.Tensor,
        adj: torch.Tensor,
        mask: torch.Tensor,
        gate_bias: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Recycle the block over graph ``adj`` ``(B, n, n)``: coordinates (and attention) after every recycle.

        ``gate_bias`` ``(B, n, n)`` is added (scaled by ``beta_r``) where given. Returns the list
        of ``(B, n, 2)`` coordinates and, with ``return_attention``, of ``(B, H, n, n)`` weights.
        """
        b, n, _ = c.shape
        eye = torch.eye(n, dtype=torch.bool, device=c.device)
        allowed = (adj | eye) & mask[:, :, None] & mask[:, None, :]
        allowed = allowed | (eye & ~mask[:, :, None])  # padding rows attend to themselves (kept finite)
        m = mask.unsqueeze(-1).to(c.dtype)
        x = masked_center(x0, mask)
        xs, attns = [], []
        for r in range(self.n_recycles):
            q, k, v = self.qkv(self.norm(c)).view(b, n, 3, self.n_heads, self.dh).permute(2, 0, 3, 1, 4)
            q, k = self.q_norm(q), self.k_norm(k)
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            logits = self.log_scale.exp()[None, :, None, None] * (q @ k.transpose(-1, -2))
            if gate_bias is not None:
                logits = logits + self._beta(r) * gate_bias[:, None]
            if r >= 1:
                d = torch.cdist(x, x)
                u = (d / (masked_rms(x, mask) * self.rbf_width)[:, None, None]).unsqueeze(-1)
                z = u - self._centers_w  # (d_n - c_r) / w, then phi_r = exp(-z^2) in two passes
                phi = torch.exp(z * (self._centers_w - u))
                bias = (phi @ self.rbf.T).permute(0, 3, 1, 2)  # (B, H, n, n)
                logits = logits + self.rbf_clip * torch.tanh(bias / self.rbf_clip)
            a = torch.softmax(logits.masked_fill(~allowed[:, None], -1e9), dim=-1)
            a = a * allowed[:, None]
            upd = (a @ v).transpose(1, 2).reshape(b, n, -1)
            c = (c + self.out(upd)) * m
            c = (c + self.ffn(c)) * m
            # dx_i = eta_r sum_h A_h (sum_j a_ij x_j - x_i)   (rows of a sum to 1)
            disp = a @ x[:, None] - x[:, None]  # (B, H, n, 2)
            a_mat = torch.einsum("hk,kdc->hdc", self.coord, self._basis)
            dx = torch.einsum("bhnc,hdc->bnd", disp, a_mat)
            x = masked_center(x + self.step[r] * dx, mask)
            xs.append(x)
            if return_attention:
                attns.append(a)
        return xs, attns

    def gate_logits(self, h: torch.Tensor, mask: torch.Tensor):
        """Candidate graph, its neighbour lists and the gate's edge logits (the inference graph)."""
        adj, cos = candidate_graph(h, mask, self.k_candidates)
        nbr, nbr_mask = neighbor_lists(adj)
        return adj, nbr, nbr_mask, self.gate(h, cos, nbr, nbr_mask)

    def forward_inference(
        self,
        h: torch.Tensor,
        c: torch.Tensor,
        x0: torch.Tensor,
        mask: torch.Tensor,
        *,
        detach_gate: bool = True,
        return_attention: bool = False,
    ):
        """Run the inference path: candidate graph + gate bias.

        Returns ``(xs, attns, (nbr, nbr_mask, logits), candidates)``; the gate bias passed to the
        block is detached from the geometry loss when ``detach_gate``.
        """
        adj, nbr, nbr_mask, g = self.gate_logits(h, mask)
        dense = dense_bias(adj, nbr, nbr_mask, g)
        bias = dense.detach() if detach_gate else dense
        xs, attns = self.run(c, x0, adj, mask, bias, return_attention=return_attention)
        return xs, attns, (nbr, nbr_mask, g), adj

    def forward_oracle(
        self, c: torch.Tensor, x0: torch.Tensor, coords: torch.Tensor, mask: torch.Tensor, *, return_attention=False
    ):
        """Oracle path: true spatial kNN edges of ``coords``, gate off. Returns ``(xs, attns, adj)``."""
        adj = spatial_graph(coords, mask, self.k_oracle)
        xs, attns = self.run(c, x0, adj, mask, None, return_attention=return_attention)
        return xs, attns, adj
