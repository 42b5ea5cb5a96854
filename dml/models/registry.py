"""``model.name`` in params.yaml -> a :class:`Backbone`; :func:`build_model` turns the model
section into an :class:`EmbeddingModel` with that backbone's input convention."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dml.models import bninception, googlenet, resnet
from dml.models.base import EmbeddingModel
from dml.models.bninception import bninception_features
from dml.models.config import ModelConfig, Pooling
from dml.models.googlenet import googlenet_features
from dml.models.resnet import resnet50_features
from dml.models.small_cnn import small_cnn_features
from dml.models.weights import read_weights, resolve_weights_path
from dml.registry import lookup

# (in_channels, pooling, ImageNet state dict or None) -> (features: images -> (B, feature_dim), feature_dim)
FeatureBuilder = Callable[[int, Pooling, Mapping[str, torch.Tensor] | None], tuple[nn.Module, int]]
Normalization = tuple[tuple[float, ...], tuple[float, ...], bool]

IMAGENET_MEAN = tuple(255 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255 * s for s in (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Backbone:
    """How to build one architecture, where its official ImageNet weights come from, and the
    input those weights expect (0-255 scale; ``bgr``: channels flipped before normalising)."""

    build: FeatureBuilder
    weights_url: str | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    bgr: bool = False


def _small_cnn(in_channels: int, pooling: Pooling, state_dict: Mapping[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    return small_cnn_features(in_channels, pooling), 256


MODELS: dict[str, Backbone] = {
    "small_cnn": Backbone(_small_cnn),
    "resnet50": Backbone(resnet50_features, resnet.WEIGHTS_URL, IMAGENET_MEAN, IMAGENET_STD),
    # torchvision's transform_input folded in: (x / 255 - 0.5) / 0.5, what the TF-ported weights expect
    "googlenet": Backbone(googlenet_features, googlenet.WEIGHTS_URL, (127.5,) * 3, (127.5,) * 3),
    "bninception": Backbone(bninception_features, bninception.WEIGHTS_URL, (104.0, 117.0, 128.0), (1.0, 1.0, 1.0), bgr=True),
}


def input_normalization(name: str) -> Normalization:
    """``(mean, std, bgr)`` of a backbone's ImageNet weights on the 0-255 scale, mean/std in the
    network's channel order (BGR for bninception)."""
    backbone = lookup(MODELS, "model.name", name)
    if backbone.weights_url is None:
        raise ValueError(f"model.name: {name!r} has no pretrained weights, so no input convention of its own (it uses the data's statistics)")
    return backbone.mean, backbone.std, backbone.bgr


def model_normalization(cfg: ModelConfig, in_channels: int, mean: Sequence[float], std: Sequence[float]) -> Normalization:
    """The model's input normalisation: the data's ``mean``/``std`` (RGB), unless ``cfg.pretrained``,
    where the weights' own convention replaces them; for grayscale input the mean of the RGB
    constants (the stem's filters are the summed RGB filters) and no flip."""
    if not cfg.pretrained:
        return tuple(mean), tuple(std), False
    own_mean, own_std, bgr = input_normalization(cfg.name)
    if in_channels == 3:
        return own_mean, own_std, bgr
    return (sum(own_mean) / 3,) * in_channels, (sum(own_std) / 3,) * in_channels, False


def build_model(
    cfg: ModelConfig, in_channels: int, mean: Sequence[float], std: Sequence[float], load_weights: bool = True
) -> EmbeddingModel:
    """The model of ``cfg``; ``mean``/``std``: the data's statistics (see :func:`model_normalization`).
    ``load_weights=False`` builds the same network and input convention without reading the
    ImageNet file (for a saved model, whose state dict replaces the weights anyway)."""
    backbone = lookup(MODELS, "model.name", cfg.name)
    if not isinstance(cfg.normalize, bool):
        raise ValueError("model.normalize: unresolved 'auto' (parse params with dml.config.parse_params)")
    mean, std, bgr = model_normalization(cfg, in_channels, mean, std)
    state_dict, sha256 = None, None
    if cfg.pretrained and load_weights and backbone.weights_url is not None:
        weights = read_weights(resolve_weights_path(cfg.weights, backbone.weights_url), backbone.weights_url, cfg.name)
        state_dict, sha256 = weights.state_dict, weights.sha256
    features, feature_dim = backbone.build(in_channels, cfg.pooling, state_dict)
    return EmbeddingModel(
        features, feature_dim, cfg.embed_dim, mean, std,
        freeze_bn=cfg.freeze_bn, normalize=cfg.normalize, bgr=bgr, weights_sha256=sha256,
    )
