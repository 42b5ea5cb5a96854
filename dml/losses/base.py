"""What every loss shares: ``forward(embeddings, labels, tuples)`` where ``tuples`` is what the
miner gave (``Triplets``, ``PairSets`` or ``None``, as the knobs' ``consumes`` declares), its own
parameters in their own optimiser group, and an explicit random stream. ``forward`` answers a
batch the miner found no tuple in once, here, and hands every other batch to ``compute``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dml.losses.config import LossKnobs
from dml.tuples import PairSets, Triplets


class Loss(nn.Module):
    """Base of the zoo. Subclasses set ``Knobs`` and take ``(knobs, **needs)`` where ``needs`` are
    the names in ``Knobs.needs`` (``num_classes``, ``embed_dim``)."""

    Knobs: ClassVar[type[LossKnobs]]

    def __init__(self, knobs: LossKnobs) -> None:
        super().__init__()
        if not isinstance(knobs, self.Knobs):
            raise TypeError(f"{type(self).__name__} takes {self.Knobs.__name__}, got {type(knobs).__name__}")
        self.knobs = knobs
        # Losses that draw random numbers (quadruplet's n') use this stream; the training loop
        # re-seeds it every epoch, and checkpoints carry its state.
        self.generator = torch.Generator()

    def manual_seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def param_groups(self, model_lr: float) -> list[dict]:
        """The optimiser group of the loss's own parameters with its learning-rate rule
        (``knobs.optim``); empty for a loss without parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        optim = self.knobs.optim  # every loss with parameters has an optim knob (tested)
        return [{"params": params, "lr": optim.learning_rate(model_lr), "weight_decay": optim.weight_decay}]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: Triplets | PairSets | None = None) -> torch.Tensor:
        """The loss of a batch; mined tuples, when there are none, give :meth:`zero` (a loss
        that reads the whole batch gets ``None`` and decides itself)."""
        if tuples is not None and len(tuples) == 0:
            return self.zero(embeddings)
        return self.compute(embeddings, labels, tuples)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: Triplets | PairSets | None) -> torch.Tensor:
        """The subclass's loss of a batch with at least one tuple (or the whole batch)."""
        raise NotImplementedError

    def monitored(self) -> dict[str, float]:
        """Numbers of the loss's own state worth a per-epoch curve (margin loss: mean beta)."""
        return {}

    def zero(self, embeddings: torch.Tensor) -> torch.Tensor:
        """A zero loss connected to the embeddings and every own parameter (nothing to learn from
        this batch, but backward() and the optimiser step still work)."""
        out = embeddings.sum() * 0.0
        for p in self.parameters():
            out = out + p.sum() * 0.0
        return out
