"""The embedding storage the embedded samplers (coresets, DDM, FRD) choose batches from."""

from __future__ import annotations

import numpy as np
import torch

from dml.inference import embed_arrays
from dml.models import EmbeddingModel


class EmbeddingStorage:
    """The latest known embedding of every training image (N x D, on the training device).

    Filled by one embedding pass over the training set (eval mode, no augmentation, no grad)
    before the first epoch and again every ``refresh_every`` epochs; in between, each training
    batch overwrites its rows with its own detached training embeddings (``update``), as the paper
    code does, so the samplers see the model as it moves. It belongs to one training run and is
    part of its checkpoint: a resumed run reads exactly what the interrupted one would have.
    """

    def __init__(
        self, size: int, dim: int, device: torch.device, refresh_every: int = 0, update: bool = True, batch_size: int = 512
    ) -> None:
        self.embeddings = torch.zeros(size, dim, device=device)
        self.refresh_every = refresh_every
        self.update = update
        self.batch_size = batch_size  # of the embedding pass

    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    def refresh_due(self, epoch: int) -> bool:
        """Before epoch 0 (the initial fill) and every ``refresh_every`` epochs after it."""
        return epoch == 0 or (self.refresh_every > 0 and epoch % self.refresh_every == 0)

    def refresh(self, model: EmbeddingModel, images: np.ndarray) -> None:
        """Re-embed the whole training set with the model as it is now."""
        fresh = torch.from_numpy(embed_arrays(model, images, batch_size=self.batch_size)).to(self.device)
        if fresh.shape != self.embeddings.shape:
            raise ValueError(f"storage holds {tuple(self.embeddings.shape)} embeddings, the training set gives {tuple(fresh.shape)}")
        self.embeddings = fresh

    def record(self, batch: np.ndarray, embeddings: torch.Tensor) -> None:
        """Overwrite the batch's rows with its training embeddings. An image that occurs twice in
        a batch keeps its last embedding (decided here, not by a scatter whose order of writes to
        one row is undefined on some devices)."""
        if not self.update:
            return
        _, last_from_end = np.unique(batch[::-1], return_index=True)
        last = len(batch) - 1 - last_from_end
        rows = torch.from_numpy(batch[last]).to(self.device)
        latest = embeddings.detach()[torch.from_numpy(last).to(embeddings.device)]
        self.embeddings[rows] = latest.to(self.device, self.embeddings.dtype)

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        return self.embeddings[torch.from_numpy(np.asarray(indices)).to(self.device)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"embeddings": self.embeddings}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        saved = state["embeddings"]
        if saved.shape != self.embeddings.shape:
            raise ValueError(f"checkpoint storage is {tuple(saved.shape)}, this run needs {tuple(self.embeddings.shape)}")
        self.embeddings = saved.to(self.device, self.embeddings.dtype)
