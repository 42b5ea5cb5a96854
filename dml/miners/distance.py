"""Distance-weighted sampling (Wu et al., 2017) and the paper's rho-regularised variant."""

from __future__ import annotations

import torch

from dml.miners.base import Miner
from dml.tuples import Triplets, sample_from_mask, sample_from_weights, uniform


def inverse_sphere_density_weights(
    distances: torch.Tensor, negative_mask: torch.Tensor, dim: int, lower_cutoff: float, upper_cutoff: float
) -> torch.Tensor:
    """Weights proportional to 1/q(d), where q is the density of pairwise distances of points
    uniform on the unit sphere in ``dim`` dimensions:
    log q(d) = (dim-2) log d + ((dim-3)/2) log(1 - d^2/4).
    Distances are clipped below at ``lower_cutoff``; negatives at d >= ``upper_cutoff`` get weight
    0 (they would carry no loss), unless that leaves a row with no candidate, which then falls
    back to uniform weights over its negatives."""
    d = distances.clamp(min=max(lower_cutoff, 1e-6))
    log_inv_q = (2.0 - dim) * d.log() - ((dim - 3) / 2.0) * (1.0 - 0.25 * d.pow(2)).clamp_min(1e-8).log()
    # Exclude far negatives *before* normalising by the row maximum: a near-antipodal negative
    # has a huge 1/q(d) and would otherwise underflow every other weight to zero.
    allowed = negative_mask & (distances < upper_cutoff)
    has_allowed = allowed.any(1, keepdim=True)
    log_inv_q = log_inv_q.masked_fill(~allowed, float("-inf"))
    row_max = torch.where(has_allowed, log_inv_q.max(dim=1, keepdim=True).values, torch.zeros_like(has_allowed, dtype=d.dtype))
    weights = torch.exp(log_inv_q - row_max)
    return torch.where(has_allowed, weights, negative_mask.to(weights.dtype))


class DistanceWeightedMiner(Miner):
    def __init__(self, lower_cutoff: float = 0.5, upper_cutoff: float = 1.4, seed: int = 0) -> None:
        super().__init__(seed)
        self.lower_cutoff = lower_cutoff
        self.upper_cutoff = upper_cutoff

    def choose_negatives(self, anchors, positives, distances, negative_mask, dim) -> torch.Tensor:
        weights = inverse_sphere_density_weights(distances, negative_mask, dim, self.lower_cutoff, self.upper_cutoff)
        return sample_from_weights(weights, self.generator)


class RhoDistanceMiner(DistanceWeightedMiner):
    """Rho-regularisation (Roth et al., 2020): for each anchor, with probability ``p`` the triplet
    becomes (anchor, anchor, same-class sample), so the loss pushes a same-class sample away and
    the embedding keeps more directions of variance. Otherwise it is a distance-weighted triplet.
    Following the paper's code, the positive of a regularising triplet is the anchor itself
    (d_ap = 0)."""

    def __init__(self, p: float = 0.35, lower_cutoff: float = 0.5, upper_cutoff: float = 1.4, seed: int = 0) -> None:
        # The Bernoulli draws and same-class samples use their own generator, so that the
        # distance-weighted part consumes exactly the random stream of DistanceWeightedMiner:
        # p = 0 reproduces the distance miner batch for batch.
        self.rho_generator = torch.Generator()
        super().__init__(lower_cutoff, upper_cutoff, seed)
        self.p = p

    def manual_seed(self, seed: int) -> None:
        super().manual_seed(seed)
        self.rho_generator.manual_seed(int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed + 1))))

    def generators(self) -> list[torch.Generator]:
        return [self.generator, self.rho_generator]

    def mine(self, embeddings, anchors, positives, distances, positive_mask, negative_mask) -> Triplets:
        negatives = self.choose_negatives(anchors, positives, distances, negative_mask, embeddings.shape[1])
        flip = uniform((len(anchors),), self.rho_generator, anchors.device) < self.p
        same_class = sample_from_mask(positive_mask, self.rho_generator)
        return Triplets(
            anchors,
            torch.where(flip, anchors, positives),
            torch.where(flip, same_class, negatives),
        )
