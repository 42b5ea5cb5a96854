"""Saving a trained model with what is needed to rebuild it without params.yaml."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from dml.config import ModelConfig, Params
from dml.data.stats import Stats
from dml.io import atomic_file, safe_load
from dml.models import EmbeddingModel, build_model


def save_model(path: Path, model: EmbeddingModel, params: Params, stats: Stats) -> None:
    """Weights, the training config they came from, and the data statistics (input
    normalisation) needed to rebuild the network without params.yaml."""
    with atomic_file(path) as tmp:
        torch.save(
            {
                "state_dict": model.state_dict(),
                "model": params.model.model_dump(mode="json"),
                "training_config": params.training_config(),
                "stats": asdict(stats),
            },
            tmp,
        )


def load_model(path: Path) -> EmbeddingModel:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: trained model missing (run the train stage)")
    saved = safe_load(path, "trained model")
    stats = Stats(**saved["stats"])
    # The weights are overwritten below, so never load (or look for) ImageNet weights here.
    model_cfg = ModelConfig(**{**saved["model"], "pretrained": False})
    model = build_model(model_cfg, stats.channels, stats.mean, stats.std)
    model.load_state_dict(saved["state_dict"])
    return model.eval()
