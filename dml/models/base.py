"""What every backbone shares: input normalisation, a linear embedding head, optionally
L2-normalised output and (optionally) frozen BatchNorm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingModel(nn.Module):
    """``features`` maps normalised images to a (B, feature_dim) tensor; a linear head maps that to
    the embedding, L2-normalised when ``normalize`` (the paper's protocol, except for the N-pair,
    angular and lifted losses, which the paper trains and evaluates unnormalised)."""

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        embed_dim: int,
        mean: Sequence[float],
        std: Sequence[float],
        freeze_bn: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, embed_dim)
        self.freeze_bn = freeze_bn
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: uint8 or float in [0, 255], shape (B, C, H, W)."""
        x = (images.float() - self.mean) / self.std
        embedding = self.head(self.features(x))
        return F.normalize(embedding, dim=-1) if self.normalize else embedding

    def train(self, mode: bool = True) -> EmbeddingModel:
        super().train(mode)
        if mode and self.freeze_bn:
            # Frozen BN (Roth et al.): running statistics stay fixed, the layers run in eval mode.
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self
