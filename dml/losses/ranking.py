"""Ranking losses over mined triplets (triplet, margin)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dml.losses.base import Loss
from dml.losses.config import MarginKnobs, TripletKnobs
from dml.miners.base import Triplets


def triplet_distances(embeddings: torch.Tensor, triplets: Triplets) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean d(a, p) and d(a, n); the epsilon keeps the gradient finite at d = 0 (rho
    triplets use the anchor as its own positive)."""
    anchor = embeddings[triplets.anchors]
    d_ap = ((anchor - embeddings[triplets.positives]).pow(2).sum(1) + 1e-8).sqrt()
    d_an = ((anchor - embeddings[triplets.negatives]).pow(2).sum(1) + 1e-8).sqrt()
    return d_ap, d_an


class TripletLoss(Loss):
    """FaceNet's triplet loss as in the paper's code: mean over the mined triplets (inactive ones
    included) of relu(d_ap^2 - d_an^2 + margin), squared Euclidean distances."""

    Knobs = TripletKnobs

    def __init__(self, knobs: TripletKnobs = TripletKnobs()) -> None:
        super().__init__(knobs)
        self.margin = knobs.margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        if len(triplets) == 0:
            return self.zero(embeddings)
        anchor = embeddings[triplets.anchors]
        d2_ap = (anchor - embeddings[triplets.positives]).pow(2).sum(1)
        d2_an = (anchor - embeddings[triplets.negatives]).pow(2).sum(1)
        return F.relu(d2_ap - d2_an + self.margin).mean()


class MarginLoss(Loss):
    """Margin loss (Wu et al., 2017): positives closer than beta - alpha, negatives farther than
    beta + alpha, with a learnable boundary beta (one per training class if ``beta_per_class``),
    indexed by the anchor's class. The sum of both hinge terms (plus ``nu * sum(beta)``) is divided
    by the number of active (non-zero) pair terms. The paper's code raises NameError for nu > 0
    (its bug 3); here nu works as Wu et al. define it."""

    Knobs = MarginKnobs

    def __init__(self, knobs: MarginKnobs = MarginKnobs(), num_classes: int = 1) -> None:
        super().__init__(knobs)
        self.margin = knobs.alpha
        self.per_class = knobs.beta_per_class
        self.nu = knobs.nu
        self.beta = nn.Parameter(torch.full((num_classes if self.per_class else 1,), float(knobs.beta)))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        if len(triplets) == 0:
            return self.zero(embeddings)
        d_ap, d_an = triplet_distances(embeddings, triplets)
        beta = self.beta[labels[triplets.anchors]] if self.per_class else self.beta[0].expand(len(triplets))
        pos = F.relu(d_ap - beta + self.margin)
        neg = F.relu(beta - d_an + self.margin)
        active = (pos > 0).sum() + (neg > 0).sum()
        total = (pos + neg).sum() + self.nu * beta.sum()
        return total / active.clamp_min(1)
