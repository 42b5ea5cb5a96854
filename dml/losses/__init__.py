"""Losses: ``loss.name`` in params.yaml -> a module ``loss(embeddings, labels, triplets)``.

A loss may own parameters (margin loss's beta); :func:`loss_param_groups` gives them their own
learning rate.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dml.config import LossConfig
from dml.losses.triplet_based import MarginLoss, TripletLoss
from dml.registry import lookup

LOSSES: dict[str, Callable[[LossConfig, int], nn.Module]] = {
    "margin": lambda cfg, num_classes: MarginLoss(num_classes, cfg.margin, cfg.beta, cfg.beta_per_class),
    "triplet": lambda cfg, num_classes: TripletLoss(cfg.margin),
}


def build_loss(cfg: LossConfig, num_classes: int) -> nn.Module:
    return lookup(LOSSES, "loss.name", cfg.name)(cfg, num_classes)


def loss_param_groups(loss: nn.Module, cfg: LossConfig) -> list[dict]:
    """Optimizer parameter groups for the loss's own parameters (empty if it has none)."""
    params = [p for p in loss.parameters() if p.requires_grad]
    return [{"params": params, "lr": cfg.beta_lr, "weight_decay": 0.0}] if params else []


__all__ = ["LOSSES", "MarginLoss", "TripletLoss", "build_loss", "loss_param_groups"]
