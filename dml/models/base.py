"""What every backbone shares: input normalisation, global pooling, a linear embedding head,
optionally L2-normalised output, (optionally) frozen BatchNorm, and grayscale stems."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dml.models.config import Pooling


class GlobalPool(nn.Module):
    """(B, C, H, W) -> (B, C): the backbone's global pool, replaced by ``model.pooling``:
    average, max, or their sum (``avgmax``, the paper code's 'double' pooling of BN-Inception)."""

    def __init__(self, mode: Pooling = "avg") -> None:
        super().__init__()
        if mode not in ("avg", "max", "avgmax"):
            raise ValueError(f"model.pooling: unknown {mode!r}; expected one of ['avg', 'avgmax', 'max']")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.mode == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        return (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)).flatten(1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``, with a faster forward pass where no gradient is taken (embedding,
    monitoring): the maximum of the four strided quarter views, the same values (a max is exact),
    about 3x faster than torch's CPU kernel at the glyph model's sizes. Training keeps torch's
    kernel: its backward routes each gradient to the first maximum, which the views cannot do
    cheaply, and the weights must not change."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
        return torch.maximum(top, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


def adapt_stem(net: nn.Module, conv_name: str, in_channels: int) -> None:
    """Replace the first convolution (``conv_name``, a dotted path) by one taking ``in_channels``
    inputs whose filters are the mean of the RGB filters repeated (the sum for grayscale), so
    pretrained filters still respond to intensity. 3 channels: nothing changes."""
    if in_channels == 3:
        return
    parent_name, _, attr = conv_name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    conv = getattr(parent, attr)
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, attr, new)


class EmbeddingModel(nn.Module):
    """``features`` maps normalised images to a (B, feature_dim) tensor; a linear head maps that to
    the embedding, L2-normalised when ``normalize`` (the paper's protocol, except for the N-pair,
    angular and lifted losses, which the paper trains and evaluates unnormalised).

    Input convention of the backbone: ``bgr`` flips the channel order (RGB images -> BGR, as the
    Caffe-ported BN-Inception expects), then ``(x - mean) / std`` with ``mean``/``std`` in the
    flipped order, on the 0-255 scale. ``mean``/``std`` are buffers, so they are saved with the
    weights; ``bgr`` is a plain flag (no device sync per batch), restored from the saved config.
    ``weights_sha256``: the SHA-256 of the ImageNet weights file the backbone started from."""

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        embed_dim: int,
        mean: Sequence[float],
        std: Sequence[float],
        freeze_bn: bool = False,
        normalize: bool = True,
        bgr: bool = False,
        weights_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, embed_dim)
        self.freeze_bn = freeze_bn
        self.normalize = normalize
        self.bgr = bgr
        self.weights_sha256 = weights_sha256
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))  # the default float dtype: float32
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: uint8 or float in [0, 255], shape (B, C, H, W), RGB (or grayscale); any
        memory format. The normalisation runs in the model's float dtype (float32; float64 in
        the distributed equality tests); under autocast the backbone's own layers pick their precision."""
        embedding = self.head(self.backbone_features(images))
        return F.normalize(embedding, dim=-1) if self.normalize else embedding

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (B, feature_dim) before the head (pretraining's input)."""
        x = images.to(self.mean.dtype)
        if self.bgr:
            x = x.flip(1)
        return self.features((x - self.mean) / self.std)

    def train(self, mode: bool = True) -> EmbeddingModel:
        super().train(mode)
        if mode and self.freeze_bn:
            # Frozen BN (Roth et al.): running statistics stay fixed, the layers run in eval mode.
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self
