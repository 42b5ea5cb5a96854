"""``loss.name`` in params.yaml -> the loss class, built from its knobs and what it declares it needs."""

from __future__ import annotations

from dml.losses.base import Loss
from dml.losses.batch import HistogramLoss, MultiSimilarityLoss
from dml.losses.classification import ArcFaceLoss, NormalizedSoftmaxLoss, SoftTripleLoss
from dml.losses.config import LossSection
from dml.losses.pairsets import AngularLoss, LiftedLoss, NPairLoss
from dml.losses.proxy import ProxyAnchorLoss, ProxyNCALoss
from dml.losses.ranking import ContrastiveLoss, MarginLoss, QuadrupletLoss, SNRLoss, TripletLoss
from dml.registry import lookup

LOSSES: dict[str, type[Loss]] = {
    "triplet": TripletLoss,
    "contrastive": ContrastiveLoss,
    "margin": MarginLoss,
    "lifted": LiftedLoss,
    "npair": NPairLoss,
    "angular": AngularLoss,
    "quadruplet": QuadrupletLoss,
    "snr": SNRLoss,
    "multisimilarity": MultiSimilarityLoss,
    "histogram": HistogramLoss,
    "softmax": NormalizedSoftmaxLoss,
    "arcface": ArcFaceLoss,
    "softtriple": SoftTripleLoss,
    "proxynca": ProxyNCALoss,
    "proxyanchor": ProxyAnchorLoss,
}


def build_loss(section: LossSection, num_classes: int, embed_dim: int) -> Loss:
    cls = lookup(LOSSES, "loss.name", section.name)
    available = {"num_classes": num_classes, "embed_dim": embed_dim}
    return cls(section.knobs, **{need: available[need] for need in cls.Knobs.needs})
