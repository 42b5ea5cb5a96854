"""Miners of per-anchor sets (N-pair, lifted structure) and the no-op miner."""

from __future__ import annotations

import torch

from dml.miners.base import Miner
from dml.tuples import PairSets, class_masks, sample_from_mask


def _anchors(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchors with a positive and a negative, and their positive / negative masks."""
    positive_mask, negative_mask = class_masks(labels)
    anchors = (positive_mask.any(1) & negative_mask.any(1)).nonzero().squeeze(1)
    return anchors, positive_mask[anchors], negative_mask[anchors]


class NPairMiner(Miner):
    """Sohn's N-pair tuples as the paper's code forms them: every anchor with a positive gets one
    uniformly drawn positive; its negatives are all other-class samples of the batch."""

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairSets:
        anchors, positive_mask, negative_mask = _anchors(labels.to(embeddings.device))
        chosen = sample_from_mask(positive_mask, self.generator) if len(anchors) else anchors
        one_positive = torch.zeros_like(positive_mask)
        one_positive[torch.arange(len(anchors), device=anchors.device), chosen] = True
        return PairSets(anchors, one_positive, negative_mask)


class LiftedMiner(Miner):
    """Lifted-structure sets: every anchor with a positive, all its positives, all its negatives."""

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> PairSets:
        return PairSets(*_anchors(labels.to(embeddings.device)))


class NoMiner(Miner):
    """``miner.name: none``: the loss reads the whole batch."""

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        return None
