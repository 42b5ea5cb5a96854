"""The default backbone for the embedded glyph data: four conv blocks (32/64/128/256 channels,
BN, ReLU, max-pool), global pooling (average by default). ~421k parameters with a 128-d head."""

from __future__ import annotations

from torch import nn

from dml.models.base import GlobalPool, MaxPool2x2
from dml.models.config import Pooling


def small_cnn_features(in_channels: int, pooling: Pooling = "avg", widths: tuple[int, ...] = (32, 64, 128, 256)) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if i < len(widths) - 1:
            layers.append(MaxPool2x2())
        channels = width
    layers.append(GlobalPool(pooling))
    return nn.Sequential(*layers)
