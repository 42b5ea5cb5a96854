"""Backbones: ``model.name`` in params.yaml -> a builder of an :class:`EmbeddingModel`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from dml.config import ModelConfig
from dml.models.base import EmbeddingModel
from dml.models.resnet import resnet50_features
from dml.models.small_cnn import small_cnn_features
from dml.registry import lookup

FeatureBuilder = Callable[[int, bool], tuple[nn.Module, int]]


def _small_cnn(in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    return small_cnn_features(in_channels), 256


MODELS: dict[str, FeatureBuilder] = {
    "small_cnn": _small_cnn,
    "resnet50": resnet50_features,
}


def build_model(cfg: ModelConfig, in_channels: int, mean: Sequence[float], std: Sequence[float]) -> EmbeddingModel:
    features, feature_dim = lookup(MODELS, "model.name", cfg.name)(in_channels, cfg.pretrained)
    if not isinstance(cfg.normalize, bool):
        raise ValueError("model.normalize: unresolved 'auto' (parse params with dml.config.parse_params)")
    return EmbeddingModel(features, feature_dim, cfg.embed_dim, mean, std, freeze_bn=cfg.freeze_bn, normalize=cfg.normalize)


__all__ = ["MODELS", "EmbeddingModel", "build_model"]
