"""Saving a trained model with what is needed to rebuild it without params.yaml. Above
``dml/config.py`` (it records the training config of ``Params``), so not in the models family."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from dml.config import Params
from dml.data.config import TransformsConfig
from dml.data.stats import Stats
from dml.io import atomic_file, safe_load
from dml.models import EmbeddingModel, build_model
from dml.models.config import ModelConfig


def save_model(path: Path, model: EmbeddingModel, params: Params, stats: Stats) -> None:
    """Weights, the training config they came from, the data statistics, and the SHA-256 of the
    ImageNet file the backbone started from: what is needed to rebuild the network without
    params.yaml. The input normalisation is in the state dict (mean/std buffers) and the config
    (a pretrained backbone's channel order)."""
    with atomic_file(path) as tmp:
        torch.save(
            {
                "state_dict": model.state_dict(),
                "model": params.model.model_dump(mode="json"),
                "training_config": params.weights_config(),
                "stats": asdict(stats),
                "weights_sha256": model.weights_sha256,
            },
            tmp,
        )


def load_model(path: Path) -> EmbeddingModel:
    return load_trained(path)[0]


def load_trained(path: Path) -> tuple[EmbeddingModel, Stats, TransformsConfig]:
    """The network (eval mode), the data statistics (channels: the decode mode) and the
    transforms it was trained with, from one read of the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: trained model missing (run the train stage)")
    saved = safe_load(path, "trained model")
    stats = Stats(**saved["stats"])
    # The saved config rebuilds the training-time input convention (a pretrained backbone's
    # constants and channel order, not the data's statistics); the weights are overwritten
    # below, so the ImageNet file is never read (nor needed) here.
    model = build_model(ModelConfig(**saved["model"]), stats.channels, stats.mean, stats.std, load_weights=False)
    model.load_state_dict(saved["state_dict"])
    model.weights_sha256 = saved.get("weights_sha256")
    return model.eval(), stats, TransformsConfig(**saved["training_config"]["transforms"])
