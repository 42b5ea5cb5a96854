"""Running a trained model over a split: images in, embeddings out (eval transforms, no grad)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from dml.data.config import TransformsConfig
from dml.data.loading import ImageSource, eval_loader
from dml.device import autocast, place_images
from dml.models import EmbeddingModel


@torch.no_grad()
def embed_source(
    model: EmbeddingModel,
    source: ImageSource,
    transforms: TransformsConfig,
    batch_size: int = 512,
    device: torch.device | None = None,
    num_workers: int = 0,
    amp: str = "off",
    progress: bool = False,
) -> np.ndarray:
    """Embeddings (float32, N x D, in the source's order) with the model in eval mode on
    ``device`` (default: where the model is)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    loader = eval_loader(source, transforms, batch_size, device, num_workers)
    for images, _ in tqdm(loader, desc="embed", unit="batch", disable=not progress, leave=False):
        with autocast(device, amp):
            chunks.append(model(place_images(images, device)).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)
