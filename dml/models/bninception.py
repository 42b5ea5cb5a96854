"""BN-Inception (Inception-v2 of Ioffe & Szegedy 2015), the backbone of most DML papers before
Roth et al. 2020, in the layout of the Caffe port distributed by Cadene's ``pretrainedmodels``
(Xiong's ImageNet training): every parameter and buffer has the name it has in
``bn_inception-52deb4733.pth`` (``conv1_7x7_s2.weight``, ``inception_3a_1x1_bn.running_mean``,
...), so that file loads with ``strict=True``.

Input convention of those weights: BGR, 0-255, mean (104, 117, 128), std 1 (see
``input_normalization``). Every convolution has a bias and is followed by BatchNorm (eps 1e-5)
and ReLU. BatchNorm momentum is 0.9 as in the port (Caffe's moving-average factor taken over
literally: in PyTorch the *new* batch gets weight 0.9); it only matters when BN is not frozen,
and it is what the paper's code trained with.

Spatial sizes: the stride-2 blocks (3c, 4e) concatenate a padded stride-2 convolution with an
unpadded ceil-mode max pool, which agree only on even sizes: the input side must make the
feature map entering block 3c a multiple of 4 (224 -> 28; 64 -> 8). Other sizes are one error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dml.models.base import GlobalPool, adapt_stem
from dml.models.config import Pooling

WEIGHTS_URL = "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"
FEATURE_DIM = 1024
BN_MOMENTUM = 0.9


class Block(NamedTuple):
    """One inception module: four branches concatenated along channels. ``one``: 1x1 conv width
    (0 = no such branch); ``reduce3``/``out3``: 1x1 then 3x3; ``reduce33``/``out33``: 1x1 then two
    3x3; ``pool``: 3x3 pool, then a 1x1 projection of width ``proj`` (0 = the pool passes through);
    ``stride``: 2 in the grid-reduction modules (3c, 4e), applied by the last 3x3 of each branch
    and the (unpadded) max pool."""

    name: str
    in_channels: int
    one: int
    reduce3: int
    out3: int
    reduce33: int
    out33: int
    pool: str
    proj: int
    stride: int = 1


BLOCKS = (
    Block("inception_3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    Block("inception_3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    Block("inception_3c", 320, 0, 128, 160, 64, 96, "max", 0, stride=2),
    Block("inception_4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    Block("inception_4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    Block("inception_4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    Block("inception_4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    Block("inception_4e", 608, 0, 128, 192, 192, 256, "max", 0, stride=2),
    Block("inception_5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    Block("inception_5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


def block_out_channels(block: Block) -> int:
    return block.one + block.out3 + block.out33 + (block.proj or block.in_channels)


class BNInception(nn.Module):
    """The ImageNet network (``last_linear``: 1000 classes), layers registered flat under their
    Caffe names; the branch structure lives in ``BLOCKS`` and ``_branches``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv("conv1_7x7_s2", 3, 64, 7, stride=2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._conv("conv2_3x3_reduce", 64, 64, 1)
        self._conv("conv2_3x3", 64, 192, 3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._branches: dict[str, list[list[str]]] = {}
        for block in BLOCKS:
            self._add_block(block)
        self.global_pool: nn.Module = GlobalPool("avg")
        self.last_linear: nn.Module = nn.Linear(FEATURE_DIM, num_classes)

    def _conv(self, name: str, in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> str:
        """Conv (with bias, 'same' padding) + BN, registered as ``name`` and ``name_bn``."""
        self.add_module(name, nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(out_channels, eps=1e-5, momentum=BN_MOMENTUM))
        return name

    def _add_block(self, b: Block) -> None:
        n, c = b.name, b.in_channels
        branches = []
        if b.one:
            branches.append([self._conv(f"{n}_1x1", c, b.one, 1)])
        branches.append([self._conv(f"{n}_3x3_reduce", c, b.reduce3, 1), self._conv(f"{n}_3x3", b.reduce3, b.out3, 3, b.stride)])
        branches.append([
            self._conv(f"{n}_double_3x3_reduce", c, b.reduce33, 1),
            self._conv(f"{n}_double_3x3_1", b.reduce33, b.out33, 3),
            self._conv(f"{n}_double_3x3_2", b.out33, b.out33, 3, b.stride),
        ])
        if b.pool == "avg":
            pool: nn.Module = nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
        elif b.stride == 1:
            pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        else:
            pool = nn.MaxPool2d(3, stride=b.stride, ceil_mode=True)
        self.add_module(f"{n}_pool", pool)
        branches.append([f"{n}_pool"] + ([self._conv(f"{n}_pool_proj", c, b.proj, 1)] if b.proj else []))
        self._branches[n] = branches

    def _layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """A pool by its name, or conv -> BN -> ReLU."""
        if name.endswith("_pool"):
            return getattr(self, name)(x)
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)), inplace=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) BGR images, mean-subtracted -> (B, 1024, H/32, W/32) feature map."""
        x = self.pool1_3x3_s2(self._layer("conv1_7x7_s2", x))
        x = self.pool2_3x3_s2(self._layer("conv2_3x3", self._layer("conv2_3x3_reduce", x)))
        for block, branches in self._branches.items():
            outs = []
            for branch in branches:
                y = x
                for name in branch:
                    y = self._layer(name, y)
                outs.append(y)
            if len({o.shape[-2:] for o in outs}) > 1:
                raise ValueError(
                    f"bninception: {block} gets a {tuple(x.shape[-2:])} feature map, odd sizes cannot be reduced; "
                    f"use an input side whose map before inception_3c is a multiple of 4 (e.g. 64, 96, 224)"
                )
            x = torch.cat(outs, 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(self.global_pool(self.features(x)))


def bninception_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Some copies of the Caffe port store BN tensors as (1, C) (an old PyTorch layout); the
    network's are (C,). Anything else passes unchanged, so a wrong file still fails strictly."""
    return {k: v.flatten() if v.dim() == 2 and v.shape[0] == 1 and k.rsplit(".", 1)[0].endswith("_bn") else v
            for k, v in state_dict.items()}


def bninception_features(in_channels: int, pooling: Pooling, state_dict: Mapping[str, torch.Tensor] | None) -> tuple[nn.Module, int]:
    """BN-Inception up to its global pool (replaced by ``pooling``), the classifier removed;
    ``state_dict``: the Caffe-ported ImageNet file, loaded strictly (classifier included)."""
    net = BNInception()
    if state_dict is not None:
        net.load_state_dict(bninception_state_dict(state_dict))
    adapt_stem(net, "conv1_7x7_s2", in_channels)
    net.global_pool = GlobalPool(pooling)
    net.last_linear = nn.Identity()
    return net, FEATURE_DIM
