"""The embedding storage the embedded samplers (coresets, DDM, FRD) choose batches from."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch


class EmbeddingStorage:
    """The latest known embedding of every training image (N x D, on the training device).

    Filled by one embedding pass over the training set (eval mode, no augmentation, no grad)
    before the first epoch and again every ``refresh_every`` epochs; in between, each training
    batch overwrites its rows with its own detached training embeddings (``update``), as the paper
    code does, so the samplers see the model as it moves. It belongs to one training run and is
    part of its checkpoint: a resumed run reads exactly what the interrupted one would have.

    ``delay``: batch t of an epoch is chosen from the storage as updated by the batches before
    t - delay. A DataLoader with workers asks for batches ahead of training; recorded updates wait
    here and are applied in batch order (:meth:`catch_up`), so what a sampler sees depends on
    ``delay`` only, never on how far ahead the loader happens to run.
    """

    def __init__(
        self, size: int, dim: int, device: torch.device, refresh_every: int = 0, update: bool = True,
        batch_size: int = 512, delay: int = 0,
    ) -> None:
        self.embeddings = torch.zeros(size, dim, device=device)
        self.refresh_every = refresh_every
        self.update = update
        self.batch_size = batch_size  # of the embedding pass
        self.delay = delay
        self.pending: deque[tuple[torch.Tensor, torch.Tensor]] = deque()
        self.recorded = self.applied = 0  # batches of the current epoch

    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    def refresh_due(self, epoch: int) -> bool:
        """Before epoch 0 (the initial fill) and every ``refresh_every`` epochs after it."""
        return epoch == 0 or (self.refresh_every > 0 and epoch % self.refresh_every == 0)

    def refresh(self, fresh: torch.Tensor) -> None:
        """Replace every row with a fresh embedding pass over the training set (eval transforms)."""
        if fresh.shape != self.embeddings.shape:
            raise ValueError(f"storage holds {tuple(self.embeddings.shape)} embeddings, the training set gives {tuple(fresh.shape)}")
        self.flush()
        self.embeddings = fresh.to(self.device, self.embeddings.dtype)

    def record(self, batch: np.ndarray, embeddings: torch.Tensor) -> None:
        """Queue the overwrite of the batch's rows with its training embeddings (applied by
        :meth:`catch_up`). An image that occurs twice in a batch keeps its last embedding (decided
        here, not by a scatter whose order of writes to one row is undefined on some devices)."""
        self.recorded += 1
        if not self.update:
            return
        _, last_from_end = np.unique(batch[::-1], return_index=True)
        last = len(batch) - 1 - last_from_end
        rows = torch.from_numpy(batch[last]).to(self.device)
        latest = embeddings.detach()[torch.from_numpy(last).to(embeddings.device)]
        self.pending.append((rows, latest.to(self.device, self.embeddings.dtype)))

    def catch_up(self, step: int) -> None:
        """Make the storage what batch ``step`` of this epoch may see: every update of the batches
        before ``step - delay``."""
        # A loader never asks further ahead than delay covers (dml/config.py checks delay against
        # the workers' prefetch), so every update due here is recorded; a sampler iterated on its
        # own, outside training, records nothing and sees the storage as it is.
        target = min(max(0, step - self.delay), self.recorded)
        while self.applied < target:
            self._apply_next()

    def flush(self) -> None:
        """Apply every recorded update and start counting batches afresh (epoch boundaries)."""
        while self.pending:
            self._apply_next()
        self.recorded = self.applied = 0

    def _apply_next(self) -> None:
        self.applied += 1
        if self.update:
            rows, latest = self.pending.popleft()
            self.embeddings[rows] = latest

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        return self.embeddings[torch.from_numpy(np.asarray(indices)).to(self.device)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.flush()  # checkpoints are taken between epochs, where the delay window closes anyway
        return {"embeddings": self.embeddings}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        saved = state["embeddings"]
        if saved.shape != self.embeddings.shape:
            raise ValueError(f"checkpoint storage is {tuple(saved.shape)}, this run needs {tuple(self.embeddings.shape)}")
        self.embeddings = saved.to(self.device, self.embeddings.dtype)
