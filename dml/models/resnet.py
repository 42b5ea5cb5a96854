"""ResNet50 backbone through torchvision's weights API.

Pretrained weights are read from the local torch hub cache only: this project runs offline, so
a missing file is a clear error that says where to put it instead of a hanging download.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

WEIGHTS = ResNet50_Weights.IMAGENET1K_V1


def pretrained_weights_path() -> Path:
    """Where torchvision's weights API caches the ImageNet checkpoint (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(WEIGHTS.url).name


def resnet50_features(in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    net = resnet50(weights=None)
    if pretrained:
        path = pretrained_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained: ImageNet weights for resnet50 not found at {path}; "
                f"download {WEIGHTS.url} there (this pipeline never downloads)"
            )
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if in_channels != 3:
        # Grayscale input: sum the RGB filters so pretrained features still respond to intensity.
        conv = net.conv1
        net.conv1 = nn.Conv2d(in_channels, conv.out_channels, 7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            net.conv1.weight.copy_(conv.weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim
