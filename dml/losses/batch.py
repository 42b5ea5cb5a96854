"""Losses over the whole batch, no miner (multi-similarity, histogram): they build their own
pairs from the labels. Both are defined on cosine similarities, so they L2-normalise the
embeddings themselves (idempotent on the unit vectors the model gives them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dml.losses.base import Loss
from dml.losses.config import HistogramKnobs, MultiSimilarityKnobs
from dml.tuples import class_masks


class MultiSimilarityLoss(Loss):
    """Multi-similarity loss (Wang et al., 2019) with its pair mining, s = cosine similarity.

    For every anchor i with positives P (same class, not i) and negatives N (other classes):
    keep negatives with s_in + epsilon > min_P s_ip and positives with s_ip - epsilon <
    max_N s_in; an anchor with no positive, no negative, or an empty kept set is skipped. Per
    kept anchor: (1/alpha) log(1 + sum_P' e^{-alpha (s - base)}) + (1/beta) log(1 + sum_N'
    e^{beta (s - base)}); the loss is the mean over the kept anchors only, and 0 when every
    anchor is skipped (the paper's code crashes there: its bug 8).

    Both kept sets are empty together (each is non-empty iff max_N s + epsilon > min_P s, up to
    rounding), so an anchor is either fully kept or fully skipped. PML (MultiSimilarityLoss +
    MultiSimilarityMiner with the same epsilon) gives a skipped anchor 0 and divides by the batch
    size: ours is PML's value times B / #kept."""

    Knobs = MultiSimilarityKnobs

    def __init__(self, knobs: MultiSimilarityKnobs = MultiSimilarityKnobs()) -> None:
        super().__init__(knobs)
        self.alpha = knobs.alpha
        self.beta = knobs.beta
        self.epsilon = knobs.epsilon
        self.base = knobs.base

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: None) -> torch.Tensor:
        x = F.normalize(embeddings, dim=1)
        sim = x @ x.T
        positive, negative = class_masks(labels.to(embeddings.device))
        inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
        with torch.no_grad():
            min_positive = torch.where(positive, sim, inf).amin(dim=1, keepdim=True)
            max_negative = torch.where(negative, sim, -inf).amax(dim=1, keepdim=True)
            hard_negative = negative & (sim + self.epsilon > min_positive)
            hard_positive = positive & (sim - self.epsilon < max_negative)
        keep = hard_positive.any(dim=1) & hard_negative.any(dim=1)
        if not bool(keep.any()):
            return self.zero(embeddings)
        sim, hard_positive, hard_negative = sim[keep], hard_positive[keep], hard_negative[keep]
        pos_term = _log_one_plus_sum_exp(-self.alpha * (sim - self.base), hard_positive) / self.alpha
        neg_term = _log_one_plus_sum_exp(self.beta * (sim - self.base), hard_negative) / self.beta
        return (pos_term + neg_term).mean()


def _log_one_plus_sum_exp(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise log(1 + sum_{mask} e^z), stably (logsumexp with a zero column)."""
    z = z.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(torch.cat([z, z.new_zeros(len(z), 1)], dim=1), dim=1)


class HistogramLoss(Loss):
    """Histogram loss (Ustinova & Lempitsky, 2016): the probability that a random negative pair is
    more similar than a random positive pair, estimated from the batch.

    The cosine similarities of all unordered pairs i < j (positive: same class, negative: other
    class) go into histograms on R = ``nodes`` nodes t_r evenly spaced in [-1, 1] (step
    delta = 2/(R-1)) with linear interpolation: a similarity s in [t_r, t_{r+1}] adds
    (t_{r+1} - s)/delta to node r and (s - t_r)/delta to node r+1. Each histogram is divided by
    its number of pairs; loss = sum_r h-_r CDF+_r with CDF+_r = sum_{q<=r} h+_q. A batch without
    a positive or without a negative pair gives 0.

    Matches PML HistogramLoss(n_bins=R-1) whenever every sample has a positive in the batch (PML
    builds its pairs from triplets, so it leaves out negative pairs of two classless samples).
    Similarities are clamped to [-1, 1] and s = 1 goes to the last node, where PML would index
    past its histogram (duplicates from sampling with replacement give s = 1)."""

    Knobs = HistogramKnobs

    def __init__(self, knobs: HistogramKnobs = HistogramKnobs()) -> None:
        super().__init__(knobs)
        self.nodes = knobs.nodes
        self.delta = 2.0 / (knobs.nodes - 1)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: None) -> torch.Tensor:
        x = F.normalize(embeddings, dim=1)
        rows, cols = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
        sim = (x @ x.T)[rows, cols].clamp(-1.0, 1.0)
        labels = labels.to(x.device)
        same = labels[rows] == labels[cols]
        if not bool(same.any()) or bool(same.all()):
            return self.zero(embeddings)
        cdf_positive = torch.cumsum(self.histogram(sim[same]), dim=0)
        return (self.histogram(sim[~same]) * cdf_positive).sum()

    def histogram(self, sim: torch.Tensor) -> torch.Tensor:
        """Normalised linear-interpolation histogram of ``sim`` on the R nodes."""
        lower = torch.floor((sim.detach() + 1) / self.delta).long().clamp(0, self.nodes - 2)
        upper_weight = (sim + 1 - lower.to(sim.dtype) * self.delta) / self.delta
        hist = sim.new_zeros(self.nodes)
        hist = hist.index_add(0, lower + 1, upper_weight).index_add(0, lower, 1 - upper_weight)
        return hist / len(sim)
