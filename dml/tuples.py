"""What miners hand to losses: the tuple types, the batch's class masks and distances, and the
seeded draws both families make. Ground floor, so that losses and miners share it without
importing each other (the tuple shapes' names, ``TupleKind``, are in the torch-free schema).
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
