"""ResNet50 (torchvision), the paper's main backbone; ImageNet weights: torchvision's V1 file
(``resnet50-0676ba61.pth``; the paper's ``resnet50-19c8e357.pth`` works too via model.weights)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from dml.models.base import GlobalPool, adapt_stem
from dml.models.config import Pooling

WEIGHTS_URL = ResNet50_Weights.IMAGENET1K_V1.url
FEATURE_DIM = 2048


def resnet50_features(in_channels: int, pooling: Pooling, state_dict: Mapping[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    """The torchvision network up to its global pool (replaced by ``pooling``), fc removed;
    ``state_dict``: the ImageNet file's tensors, loaded strictly before the head is cut off."""
    net = resnet50(weights=None)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    adapt_stem(net, "conv1", in_channels)
    net.avgpool = GlobalPool(pooling)
    net.fc = nn.Identity()
    return net, FEATURE_DIM
