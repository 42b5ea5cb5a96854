"""Random and semi-hard negative mining."""

from __future__ import annotations

import torch

from dml.miners.base import Miner
from dml.tuples import Triplets, sample_from_mask


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


class SoftHardMiner(Miner):
    """The paper code's ``softhard``: per anchor a positive farther than its closest negative and a
    negative closer than its farthest positive, each drawn uniformly; an anchor without such a
    positive (negative) falls back to a uniformly random one."""

    def mine(self, embeddings, anchors, positives, distances, positive_mask, negative_mask) -> Triplets:
        inf = torch.tensor(float("inf"), device=distances.device)
        closest_negative = torch.where(negative_mask, distances, inf).min(1, keepdim=True).values
        farthest_positive = torch.where(positive_mask, distances, -inf).max(1, keepdim=True).values
        hard_pos = positive_mask & (distances > closest_negative)
        hard_neg = negative_mask & (distances < farthest_positive)
        # The base class drew `positives` uniformly; the hard draw replaces it where one exists.
        hard_positives = sample_from_mask(torch.where(hard_pos.any(1, keepdim=True), hard_pos, positive_mask), self.generator)
        negatives = sample_from_mask(torch.where(hard_neg.any(1, keepdim=True), hard_neg, negative_mask), self.generator)
        return Triplets(anchors, hard_positives, negatives)
