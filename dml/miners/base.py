"""Batch miners turn a batch of embeddings into the tuples a loss consumes: ``Triplets``
(anchor, positive, negative) or ``PairSets`` (per anchor, a set of positives and a set of
negatives: N-pair and lifted structure), or nothing (``miner.name: none``); the tuple types and
draw helpers live in ``dml/tuples.py``, shared with the losses.

A miner owns a ``torch.Generator`` so that mining is reproducible for a given seed. Anchors
without a same-class partner or without any other-class sample in the batch are skipped.
"""

from __future__ import annotations

import torch

from dml.tuples import Triplets, class_masks, pairwise_distances, sample_from_mask


class Miner:
    """Base: chooses anchors that have a positive and a negative, a uniformly random positive,
    and delegates the negative to :meth:`choose_negatives`."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator()
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> None:
        """Reset every random stream of the miner (the training loop does so every epoch)."""
        self.generator.manual_seed(seed)

    def generators(self) -> list[torch.Generator]:
        """Every random stream of the miner, in a fixed order (saved in checkpoints)."""
        return [self.generator]

    def state_dict(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators()]

    def load_state_dict(self, state: list[torch.Tensor]) -> None:
        for generator, saved in zip(self.generators(), state, strict=True):
            generator.set_state(saved)

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        labels = labels.to(embeddings.device)
        positive_mask, negative_mask = class_masks(labels)
        valid = positive_mask.any(1) & negative_mask.any(1)
        anchors = valid.nonzero().squeeze(1)
        if anchors.numel() == 0:
            empty = anchors.new_empty(0)
            return Triplets(empty, empty, empty)
        distances = pairwise_distances(embeddings)
        positives = sample_from_mask(positive_mask[anchors], self.generator)
        return self.mine(embeddings, anchors, positives, distances[anchors], positive_mask[anchors], negative_mask[anchors])

    def mine(
        self,
        embeddings: torch.Tensor,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        distances: torch.Tensor,
        positive_mask: torch.Tensor,
        negative_mask: torch.Tensor,
    ) -> Triplets:
        """Rows of ``distances`` and the masks belong to ``anchors``."""
        negatives = self.choose_negatives(anchors, positives, distances, negative_mask, embeddings.shape[1])
        return Triplets(anchors, positives, negatives)

    def choose_negatives(
        self,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        distances: torch.Tensor,
        negative_mask: torch.Tensor,
        dim: int,
    ) -> torch.Tensor:
        raise NotImplementedError
