"""Ranking losses over mined triplets (triplet, margin, contrastive, quadruplet, SNR)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dml.losses.base import Loss
from dml.losses.config import ContrastiveKnobs, MarginKnobs, QuadrupletKnobs, SNRKnobs, TripletKnobs
from dml.tuples import Triplets, uniform


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

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
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

    def monitored(self) -> dict[str, float]:
        return {"beta_mean": float(self.beta.detach().mean())}

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        d_ap, d_an = triplet_distances(embeddings, triplets)
        beta = self.beta[labels[triplets.anchors]] if self.per_class else self.beta[0].expand(len(triplets))
        pos = F.relu(d_ap - beta + self.margin)
        neg = F.relu(beta - d_an + self.margin)
        active = (pos > 0).sum() + (neg > 0).sum()
        total = (pos + neg).sum()
        if self.nu:  # nu = 0 (the default) adds nothing to the graph
            total = total + self.nu * beta.sum()
        return total / active.clamp_min(1)


class ContrastiveLoss(Loss):
    """Contrastive loss (Hadsell et al., 2006) on the mined triplets' pairs: every triplet gives
    one positive pair (a, p) and one negative pair (a, n); the loss is
    mean relu(d_ap - pos_margin) + mean relu(neg_margin - d_an), unsquared Euclidean distances,
    each mean over all triplets (inactive pairs included), as in the paper's code. Equal to PML
    ``ContrastiveLoss(pos_margin, neg_margin, reducer=MeanReducer())`` with the triplets as
    ``indices_tuple`` on unnormalised distances. d = sqrt(d^2 + 1e-8) (``triplet_distances``)
    keeps rho triplets (d_ap = 0) differentiable; it moves d by at most 1e-4 (at d = 0)."""

    Knobs = ContrastiveKnobs

    def __init__(self, knobs: ContrastiveKnobs = ContrastiveKnobs()) -> None:
        super().__init__(knobs)
        self.pos_margin = knobs.pos_margin
        self.neg_margin = knobs.neg_margin

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        d_ap, d_an = triplet_distances(embeddings, triplets)
        return F.relu(d_ap - self.pos_margin).mean() + F.relu(self.neg_margin - d_an).mean()


class QuadrupletLoss(Loss):
    """Quadruplet loss (Chen et al., 2017, Eq. 4):
    mean relu(d_ap^2 - d_an^2 + alpha1) + mean relu(d_ap^2 - d(n, n')^2 + alpha2),
    where n' is drawn uniformly (``self.generator``) among the batch samples whose class differs
    from both the anchor's and the negative's class, so the second term pushes a negative pair
    that does not involve the anchor beyond the positive pair.

    Deviations from the paper's code, which follow the original paper:
    * squared Euclidean distances as in Chen et al. (the code uses unsquared norms);
    * n' is chosen by class (the code compares sample *indices*, so n' may share the anchor's or
      the negative's class: its bug 7).
    The first mean is over all triplets; the second over the triplets that have a valid n'.
    A triplet whose batch holds no third class has no quadruplet, so it contributes only to the
    first term; if no triplet has one, the second term is 0."""

    Knobs = QuadrupletKnobs

    def __init__(self, knobs: QuadrupletKnobs = QuadrupletKnobs()) -> None:
        super().__init__(knobs)
        self.alpha1 = knobs.alpha1
        self.alpha2 = knobs.alpha2

    def draw_fourth(self, labels: torch.Tensor, triplets: Triplets) -> tuple[torch.Tensor, torch.Tensor]:
        """For every triplet, a uniformly drawn n' whose class is neither the anchor's nor the
        negative's, and whether such a sample exists (where not, the index is meaningless).
        Consumes one uniform draw per (triplet, batch sample) from ``self.generator``."""
        label_a = labels[triplets.anchors]
        label_n = labels[triplets.negatives]
        valid = (labels[None, :] != label_a[:, None]) & (labels[None, :] != label_n[:, None])
        scores = uniform(valid.shape, self.generator, labels.device)
        fourth = torch.where(valid, scores, torch.full_like(scores, -1.0)).argmax(dim=1)
        return fourth, valid.any(dim=1)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        fourth, has_fourth = self.draw_fourth(labels.to(embeddings.device), triplets)
        anchor = embeddings[triplets.anchors]
        negative = embeddings[triplets.negatives]
        d2_ap = (anchor - embeddings[triplets.positives]).pow(2).sum(1)
        d2_an = (anchor - negative).pow(2).sum(1)
        triplet_term = F.relu(d2_ap - d2_an + self.alpha1).mean()
        if not bool(has_fourth.any()):
            return triplet_term
        d2_nn = (negative[has_fourth] - embeddings[fourth[has_fourth]]).pow(2).sum(1)
        quadruplet_term = F.relu(d2_ap[has_fourth] - d2_nn + self.alpha2).mean()
        return triplet_term + quadruplet_term


def snr_distance(anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise distance Var(a - b) / Var(a), variances over the embedding dimensions.
    The variance's normalisation (1/D or 1/(D-1)) cancels in the ratio, so the paper's code
    (torch.var, unbiased) and PML's SNRDistance agree with any choice; a constant anchor (Var = 0)
    is guarded by a tiny floor instead of dividing by zero."""
    return (anchor - other).var(dim=1) / anchor.var(dim=1).clamp_min(1e-12)


class SNRLoss(Loss):
    """Signal-to-noise-ratio triplet loss (Yuan et al., 2019):
    sum relu(S_ap - S_an + margin) / #(active triplets) + reg_weight * mean |sum_k a_k|,
    S = ``snr_distance``, the regulariser's mean over the triplets' anchor rows (the paper's code
    regularises only the anchors; PML's ZeroMeanRegularizer the whole batch). When no triplet is
    active the hinge part is 0 (the paper's code divides 0 by 0 there: its bug 11).

    Not done here: the paper's code silently sets reg_weight = 0 when the miner is ``distance``;
    this loss uses the knob as given."""

    Knobs = SNRKnobs

    def __init__(self, knobs: SNRKnobs = SNRKnobs()) -> None:
        super().__init__(knobs)
        self.margin = knobs.margin
        self.reg_weight = knobs.reg_weight

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        anchor = embeddings[triplets.anchors]
        s_ap = snr_distance(anchor, embeddings[triplets.positives])
        s_an = snr_distance(anchor, embeddings[triplets.negatives])
        hinge = F.relu(s_ap - s_an + self.margin)
        active = (hinge > 0).sum().clamp_min(1)
        regulariser = anchor.sum(dim=1).abs().mean()
        return hinge.sum() / active + self.reg_weight * regulariser
