"""Ranking losses over mined triplets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dml.miners.base import Triplets


def triplet_distances(embeddings: torch.Tensor, triplets: Triplets) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean d(a, p) and d(a, n); the epsilon keeps the gradient finite at d = 0 (rho
    triplets use the anchor as its own positive)."""
    anchor = embeddings[triplets.anchors]
    d_ap = ((anchor - embeddings[triplets.positives]).pow(2).sum(1) + 1e-8).sqrt()
    d_an = ((anchor - embeddings[triplets.negatives]).pow(2).sum(1) + 1e-8).sqrt()
    return d_ap, d_an


class TripletLoss(nn.Module):
    """mean over triplets of max(0, d_ap - d_an + margin)."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        if len(triplets) == 0:
            return embeddings.sum() * 0.0
        d_ap, d_an = triplet_distances(embeddings, triplets)
        return F.relu(d_ap - d_an + self.margin).mean()


class MarginLoss(nn.Module):
    """Margin loss (Wu et al., 2017): positives closer than beta - alpha, negatives farther than
    beta + alpha, with a learnable boundary beta (one per training class if ``per_class``).
    The sum of both hinge terms is divided by the number of active (non-zero) pair terms."""

    def __init__(self, num_classes: int, margin: float = 0.2, beta: float = 1.2, per_class: bool = True) -> None:
        super().__init__()
        self.margin = margin
        self.per_class = per_class
        self.beta = nn.Parameter(torch.full((num_classes if per_class else 1,), float(beta)))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        if len(triplets) == 0:
            return embeddings.sum() * 0.0 + self.beta.sum() * 0.0
        d_ap, d_an = triplet_distances(embeddings, triplets)
        beta = self.beta[labels[triplets.anchors]] if self.per_class else self.beta[0]
        pos = F.relu(d_ap - beta + self.margin)
        neg = F.relu(beta - d_an + self.margin)
        active = (pos > 0).sum() + (neg > 0).sum()
        return (pos + neg).sum() / active.clamp_min(1)
