"""Batch miners turn a batch of embeddings into the tuples a loss consumes: ``Triplets``
(anchor, positive, negative) or ``PairSets`` (per anchor, a set of positives and a set of
negatives: N-pair and lifted structure), or nothing (``miner.name: none``).

A miner owns a ``torch.Generator`` so that mining is reproducible for a given seed. Anchors
without a same-class partner or without any other-class sample in the batch are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Triplets:
    anchors: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor

    def __len__(self) -> int:
        return int(self.anchors.numel())


@dataclass(frozen=True)
class PairSets:
    """Per anchor, boolean masks over the batch of its positives and its negatives (rows belong
    to ``anchors``). The N-pair miner gives exactly one positive per anchor."""

    anchors: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor

    def __len__(self) -> int:
        return int(self.anchors.numel())


def class_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(same class and not self, other class) boolean matrices of a batch."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between all rows (no gradient: miners only select)."""
    emb = embeddings.detach()
    sq = emb.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * emb @ emb.T).clamp_min(0).sqrt()


def uniform(shape: tuple[int, ...] | torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """U[0, 1) draws made on the generator's device (CPU: the same stream on every machine, and
    the state that checkpoints hold), then moved to where the batch is."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def sample_from_mask(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For every row, the column of one uniformly drawn True entry (rows must have one)."""
    scores = uniform(mask.shape, generator, mask.device)
    return torch.where(mask, scores, torch.full_like(scores, -1.0)).argmax(dim=1)


def sample_from_weights(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For every row, one column drawn with probability proportional to ``weights``."""
    return torch.multinomial(weights.to(generator.device), 1, generator=generator).squeeze(1).to(weights.device)


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
