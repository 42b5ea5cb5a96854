"""Running a trained model: images in, L2-normalised embeddings out."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from dml.models import EmbeddingModel


@torch.no_grad()
def embed_arrays(model: EmbeddingModel, images: np.ndarray, batch_size: int = 512, progress: bool = False) -> np.ndarray:
    """Embeddings (float32, N x D) of uint8 images, model in eval mode."""
    was_training = model.training
    model.eval()
    chunks = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="embed", unit="batch", disable=not progress, leave=False):
        batch = torch.from_numpy(np.array(images[start : start + batch_size]))  # copy: memmaps are read-only
        chunks.append(model(batch).numpy())
    model.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)
