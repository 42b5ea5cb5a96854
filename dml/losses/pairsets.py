"""Pair-set losses over the ``PairSets`` the set miners give (``dml/miners/sets.py``): the
generalised lifted structure loss (``lifted`` miner: all positives and all negatives per anchor)
and the N-pair and angular losses (``npair`` miner: one positive per anchor, every other-class
sample as a negative).

The sets are ragged (an anchor's negatives are the batch minus its class, whose size varies with
the class draw), so every set reduction is a logsumexp over an anchor's row of the batch with the
entries outside the set masked to -inf: no loop over anchors, no padding, and no overflow for
the large dot products of unnormalised embeddings.

All three run on the embeddings as the model gives them; ``normalize_embeddings`` (paper: false)
is read by the config layer (``model.normalize``), not here. Each adds ``l2_weight`` times the
mean embedding norm over the whole batch, as the paper's code does. A batch without any anchor
gives the connected zero of ``Loss.zero`` (as the paper's N-pair code, which then returns 0)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dml.losses.base import Loss
from dml.losses.config import AngularKnobs, LiftedKnobs, NPairKnobs
from dml.tuples import PairSets


def masked_logsumexp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, log sum_{j: mask} exp(values_j) (rows need at least one True entry)."""
    return torch.logsumexp(values.masked_fill(~mask, float("-inf")), dim=1)


def log1p_sum_exp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, log(1 + sum_{j: mask} exp(values_j)) = logsumexp over [0, the masked row];
    0 for a row without any True entry."""
    masked = values.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(torch.cat([masked.new_zeros(len(masked), 1), masked], dim=1), dim=1)


def mean_norm(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean norm of the batch's embeddings (the unnormalised losses' regulariser)."""
    return torch.linalg.vector_norm(embeddings, dim=1).mean()


def one_positive(sets: PairSets) -> torch.Tensor:
    """The batch index of each anchor's single positive (the N-pair tuple shape)."""
    if not bool((sets.positives.sum(1) == 1).all()):
        raise ValueError("N-pair tuples need exactly one positive per anchor (miner.name: npair)")
    return sets.positives.nonzero()[:, 1]  # row-major: one entry per row, in row order


def npair_term(embeddings: torch.Tensor, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Mean over anchors of log(1 + sum_n exp(x_a.x_n - x_a.x_p)); ``positives`` are batch
    indices, ``negatives`` the anchors' boolean rows over the batch."""
    x_a = embeddings[anchors]
    sim = x_a @ embeddings.T  # (anchors, batch): x_a . x_j
    s_ap = (x_a * embeddings[positives]).sum(1, keepdim=True)
    return log1p_sum_exp(sim - s_ap, negatives).mean()


class LiftedLoss(Loss):
    """Generalised lifted structure loss (Hermans et al. 2017, as in the paper's code): per anchor
    relu(logsumexp_P d_ap + logsumexp_N (margin - d_an)), unsquared Euclidean d, mean over the
    anchors, plus ``l2_weight * mean ||x||`` over the batch. Equals pytorch-metric-learning's
    GeneralizedLiftedStructureLoss(margin, 0, LpDistance(normalize_embeddings=False)) with an
    LpRegularizer of weight ``l2_weight`` when every sample of the batch is an anchor."""

    Knobs = LiftedKnobs

    def __init__(self, knobs: LiftedKnobs = LiftedKnobs()) -> None:
        super().__init__(knobs)
        self.margin = knobs.margin
        self.l2_weight = knobs.l2_weight

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, sets: PairSets) -> torch.Tensor:
        # Direct differences, not the |a|^2 + |b|^2 - 2ab expansion: exact for close pairs, and
        # cdist's backward gives a zero (not NaN) gradient at d = 0 (duplicate samples).
        d = torch.cdist(embeddings[sets.anchors], embeddings, compute_mode="donot_use_mm_for_euclid_dist")
        pos = masked_logsumexp(d, sets.positives)
        neg = masked_logsumexp(self.margin - d, sets.negatives)
        return F.relu(pos + neg).mean() + self.l2_weight * mean_norm(embeddings)


class NPairLoss(Loss):
    """N-pair loss (Sohn 2016) as in the paper's code: per anchor, with its one positive p and
    every other-class sample n of the batch, log(1 + sum_n exp(x_a.x_n - x_a.x_p)); mean over
    the anchors, plus ``l2_weight * mean ||x||`` over the whole batch (the paper's code adds
    ``l2 * mean ||x|| / #anchors`` once per anchor, i.e. this once)."""

    Knobs = NPairKnobs

    def __init__(self, knobs: NPairKnobs = NPairKnobs()) -> None:
        super().__init__(knobs)
        self.l2_weight = knobs.l2_weight

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, sets: PairSets) -> torch.Tensor:
        term = npair_term(embeddings, sets.anchors, one_positive(sets), sets.negatives)
        return term + self.l2_weight * mean_norm(embeddings)


class AngularLoss(Loss):
    """Angular loss (Wang et al. 2017) as in the paper's code: ``npair_weight`` times the N-pair
    term on the raw embeddings, plus ``angular_weight`` times the mean over anchors of
    log(1 + sum_n exp(4 tan^2(alpha) (u_a + u_p).u_n - 2 (1 + tan^2(alpha)) u_a.u_p)) on the unit
    vectors u, plus ``l2_weight * mean ||x||`` over the batch. Unlike the paper's code, which
    needs equal-size negative sets (its bug 9), the ragged sets are masked; and the N-pair logits
    are not clamped to [-50, 50] (the logsumexp is stable without it)."""

    Knobs = AngularKnobs

    def __init__(self, knobs: AngularKnobs = AngularKnobs()) -> None:
        super().__init__(knobs)
        self.sq_tan_alpha = math.tan(math.radians(knobs.alpha_degrees)) ** 2
        self.npair_weight = knobs.npair_weight
        self.angular_weight = knobs.angular_weight
        self.l2_weight = knobs.l2_weight

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, sets: PairSets) -> torch.Tensor:
        positives = one_positive(sets)
        u = F.normalize(embeddings, dim=1)
        u_a, u_p = u[sets.anchors], u[positives]
        f = 4 * self.sq_tan_alpha * (u_a + u_p) @ u.T - 2 * (1 + self.sq_tan_alpha) * (u_a * u_p).sum(1, keepdim=True)
        angular = log1p_sum_exp(f, sets.negatives).mean()
        npair = npair_term(embeddings, sets.anchors, positives, sets.negatives)
        return self.npair_weight * npair + self.angular_weight * angular + self.l2_weight * mean_norm(embeddings)
