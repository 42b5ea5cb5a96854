"""Random and semi-hard negative mining."""

from __future__ import annotations

import torch

from dml.miners.base import Miner, sample_from_mask


class RandomMiner(Miner):
    """A uniformly random negative per anchor (the paper's weak baseline)."""

    def choose_negatives(self, anchors, positives, distances, negative_mask, dim) -> torch.Tensor:
        return sample_from_mask(negative_mask, self.generator)


class SemiHardMiner(Miner):
    """FaceNet's semi-hard negatives: d_ap < d_an < d_ap + margin, drawn uniformly; anchors with
    none fall back to a random negative (as in Roth et al.'s code)."""

    def __init__(self, margin: float = 0.2, seed: int = 0) -> None:
        super().__init__(seed)
        self.margin = margin

    def choose_negatives(self, anchors, positives, distances, negative_mask, dim) -> torch.Tensor:
        d_ap = distances.gather(1, positives[:, None])
        semihard = negative_mask & (distances > d_ap) & (distances < d_ap + self.margin)
        has_semihard = semihard.any(1, keepdim=True)
        return sample_from_mask(torch.where(has_semihard, semihard, negative_mask), self.generator)
