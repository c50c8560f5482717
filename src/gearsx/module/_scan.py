"""SCAN clustering head and losses (Van Gansbeke et al., ECCV 2020) for fixed feature vectors."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ScanHead", "scan_loss", "self_label_loss"]


class ScanHead(nn.Module):
    """MLP trunk plus ``n_heads`` linear clustering heads over ``n_clusters`` classes.

    The trunk output (``n_hidden`` features) is the head's embedding, written to
    ``obsm['X_scan']`` by :func:`gearsx.tl.cluster_domains`. Several heads are trained at
    once from the same trunk; the one with the lowest SCAN loss is kept, as in SCAN :cite:p:`VanGansbeke2020`.

    Parameters
    ----------
    n_input
        Feature dimension.
    n_clusters
        Number of clusters.
    n_hidden
        Embedding width.
    n_heads
        Number of clustering heads trained in parallel.
    """

    def __init__(self, n_input: int, n_clusters: int, *, n_hidden: int = 128, n_heads: int = 5) -> None:
        super().__init__()
        self.n_clusters, self.n_heads = n_clusters, n_heads
        width = max(2 * n_hidden, 64)
        self.trunk = nn.Sequential(
            nn.Linear(n_input, width),
            nn.LayerNorm(width),
            nn.GELU(),
            nn.Linear(width, n_hidden),
            nn.LayerNorm(n_hidden),
            nn.GELU(),
        )
        self.heads = nn.Linear(n_hidden, n_heads * n_clusters)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features ``(B, n_hidden)``."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cluster logits ``(B, n_heads, n_clusters)``."""
        return self.heads(self.trunk(x)).view(x.shape[0], self.n_heads, self.n_clusters)


def scan_loss(
    logits_anchor: torch.Tensor, logits_neighbor: torch.Tensor, *, entropy_weight: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCAN loss per head: neighbour consistency minus ``entropy_weight`` x entropy of the mean assignment.

    Consistency is ``-mean_i log <p_i, p_j>`` for an anchor ``i`` and one of its mined
    neighbours ``j``, computed in log space (``logsumexp`` of summed log-probabilities) so it
    stays finite when the two distributions are confident and disjoint. The entropy of the
    batch-mean assignment keeps the heads from collapsing to one cluster.

    Parameters
    ----------
    logits_anchor, logits_neighbor
        ``(B, n_heads, K)`` logits.
    entropy_weight
        Weight of the entropy term.

    Returns
    -------
    ``(total, consistency, entropy)``, each of shape ``(n_heads,)``.
    """
    log_pa = torch.log_softmax(logits_anchor, dim=-1)
    log_pn = torch.log_softmax(logits_neighbor, dim=-1)
    consistency = -torch.logsumexp(log_pa + log_pn, dim=-1).mean(0)
    mean_p = log_pa.exp().mean(0)
    entropy = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum(-1)
    return consistency - entropy_weight * entropy, consistency, entropy


def self_label_loss(
    logits_weak: torch.Tensor, logits_strong: torch.Tensor, *, threshold: float = 0.99
) -> tuple[torch.Tensor, int]:
    """SCAN self-labelling: cross-entropy of the strong view against confident weak-view labels.

    Only points whose weak-view maximum probability exceeds ``threshold`` contribute; the
    cross-entropy is weighted by inverse class frequency among them (SCAN's fix for
    imbalanced pseudo-labels, :cite:p:`VanGansbeke2020`).

    Parameters
    ----------
    logits_weak, logits_strong
        ``(B, K)`` logits of one head on a weakly and a strongly perturbed view.
    threshold
        Confidence threshold.

    Returns
    -------
    The loss (``0`` when no point is confident) and the number of confident points.
    """
    with torch.no_grad():
        prob = torch.softmax(logits_weak, dim=-1)
        conf, target = prob.max(-1)
        mask = conf > threshold
    n = int(mask.sum())
    if n == 0:
        return logits_strong.sum() * 0.0, 0
    target = target[mask]
    counts = torch.bincount(target, minlength=logits_strong.shape[-1]).float()
    weight = torch.where(counts > 0, n / (counts * (counts > 0).sum()), torch.zeros_like(counts))
    loss = nn.functional.cross_entropy(logits_strong[mask], target, weight=weight)
    return loss, n
