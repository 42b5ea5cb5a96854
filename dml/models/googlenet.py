"""GoogLeNet / Inception-v1 (torchvision): the TF-ported weights *with* BatchNorm
(``googlenet-1378be20.pth``), as the paper's code loads them, not the BN-free Caffe GoogLeNet.

Input convention: torchvision builds the pretrained model with ``transform_input=True``, which
maps ImageNet-normalised input to ``(x / 255 - 0.5) / 0.5``, the scaling the TF weights were
trained on. Here ``transform_input`` is off and that scaling is the model's own normalisation
(mean = std = 127.5, see ``input_normalization``): the same numbers, one step fewer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torchvision.models import GoogLeNet, GoogLeNet_Weights

from dml.models.base import GlobalPool, adapt_stem
from dml.models.config import Pooling

WEIGHTS_URL = GoogLeNet_Weights.IMAGENET1K_V1.url
FEATURE_DIM = 1024
AUX_HEADS = ("aux1.", "aux2.")  # in the ImageNet file; never pretrained, never used here


def googlenet_features(in_channels: int, pooling: Pooling, state_dict: Mapping[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    """Everything up to the global pool (replaced by ``pooling``); dropout and fc removed, no
    auxiliary heads. ``state_dict``: the ImageNet file, loaded strictly except for its aux heads."""
    net = GoogLeNet(aux_logits=False, transform_input=False, init_weights=state_dict is None)
    if state_dict is not None:
        net.load_state_dict({k: v for k, v in state_dict.items() if not k.startswith(AUX_HEADS)})
    adapt_stem(net, "conv1.conv", in_channels)
    net.avgpool = GlobalPool(pooling)
    net.dropout = nn.Identity()
    net.fc = nn.Identity()
    return net, FEATURE_DIM
