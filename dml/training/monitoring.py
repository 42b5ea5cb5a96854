"""What training watches without touching the weights: Recall@1 per epoch (the test split's on a
fixed sample of queries, the validation split's in full, since it selects the model) and the
spectrum of the training embeddings. Each pass runs the model in eval mode, without gradients,
on the eval transforms, exactly as the embed stage does."""

from __future__ import annotations

import numpy as np

from dml.config import Params
from dml.data.loading import ImageSource
from dml.indexing import drop_self, exact_searcher, search_neighbours
from dml.inference import embed_source
from dml.metrics.embedding_space import embedding_density, singular_values, spectral_decay
from dml.models import EmbeddingModel


def embed_pass(model: EmbeddingModel, split: ImageSource, params: Params, batch_size: int | None = None) -> np.ndarray:
    """Embeddings of a split as the embed stage computes them (eval transforms, train's device),
    in batches of ``embed.batch_size`` unless ``batch_size`` is given."""
    return embed_source(model, split, params.transforms, batch_size or params.embed.batch_size,
                        num_workers=params.loader.num_workers, amp=params.train.amp)


def fixed_sample(count: int, size: int, seed: int, stream: int) -> np.ndarray:
    """``size`` sorted positions of ``count`` drawn once from ``(seed, stream)``: the same rows in
    every epoch and every run of the same data and seed, so curves compare point by point."""
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(count, size=min(size, count), replace=False))


def spectrum_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The fixed training images the per-epoch spectrum is computed on."""
    return fixed_sample(len(labels), size, seed, 4)


def quick_recall_at_1(model: EmbeddingModel, split: ImageSource, params: Params, queries: np.ndarray | None = None) -> float:
    """Recall@1 of ``queries`` (positions in ``split``; None: every image) against the whole split,
    self excluded. A uniform sample of queries estimates the full Recall@1 without bias; the
    evaluate stage computes the exact number and everything else."""
    vectors = embed_pass(model, split, params)
    queries = np.arange(len(split)) if queries is None else queries
    searcher = exact_searcher(vectors, "l2")
    found = []
    for start, ids in search_neighbours(searcher, vectors[queries], 2, exclude_self=False):
        found.append(drop_self(ids, queries[start:start + len(ids)])[:, 0])  # by position, as evaluate does
    return float(np.mean(split.labels[np.concatenate(found)] == split.labels[queries]))


def embedding_space(model: EmbeddingModel, split: ImageSource, params: Params) -> dict[str, float]:
    """rho (all values, and without the largest), pi_ratio and the top singular values of the
    model's embeddings of ``split``: how the spectrum evolves during training."""
    vectors, labels = embed_pass(model, split, params), split.labels
    s = singular_values(vectors)
    top = s[:3] / s.sum()
    return {
        "train_rho": spectral_decay(vectors, 0),
        "train_rho_skip1": spectral_decay(vectors, 1),
        "train_pi_ratio": embedding_density(vectors, labels)["pi_ratio"],
        **{f"train_sv{i + 1}": float(v) for i, v in enumerate(top)},
    }
