"""Proxy losses (ProxyNCA, ProxyAnchor): one learnable proxy per training class stands in for the
class, so the whole batch is compared with C proxies instead of mined tuples (no miner)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dml.losses.base import Loss
from dml.losses.classification import cosine
from dml.losses.config import ProxyAnchorKnobs, ProxyNCAKnobs


class ProxyNCALoss(Loss):
    """ProxyNCA (Movshovitz-Attias et al. 2017) as the paper code: embeddings and proxies are
    scaled to norm ``scale`` (3, which acts as the NCA temperature); per sample
    d^2(x, p_y) + logsumexp_{c != y}(-d^2(x, p_c)), i.e. -log of the NCA probability with the
    positive proxy left out of the denominator (so the loss can go negative); mean over the batch.
    Proxies start at N(0, 1)/8. Same math as the paper code (vectorised); PML's ProxyNCALoss
    keeps the positive proxy in the denominator, so it differs."""

    Knobs = ProxyNCAKnobs

    def __init__(self, knobs: ProxyNCAKnobs = ProxyNCAKnobs(), num_classes: int = 2, embed_dim: int = 2) -> None:
        super().__init__(knobs)
        if num_classes < 2:
            raise ValueError("ProxyNCA needs at least 2 classes (the denominator has only the other classes' proxies)")
        self.scale = knobs.scale
        self.proxies = nn.Parameter(torch.randn(num_classes, embed_dim) / 8)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: None) -> torch.Tensor:
        # ||s u - s q||^2 = 2 s^2 (1 - u.q) for unit u, q
        d2 = 2.0 * self.scale**2 * (1.0 - cosine(embeddings, self.proxies))
        positive = F.one_hot(labels, d2.shape[1]).bool()
        d2_pos = d2.gather(1, labels[:, None]).squeeze(1)
        others = torch.logsumexp((-d2).masked_fill(positive, float("-inf")), dim=1)
        return (d2_pos + others).mean()


class ProxyAnchorLoss(Loss):
    """Proxy-Anchor (Kim et al. 2020): every proxy is an anchor. With s the cosine,
    (1/|P+|) sum_{p in P+} log(1 + sum_{x in X_p+} e^{-alpha (s(x,p) - delta)})
    + (1/C) sum_p log(1 + sum_{x in X_p-} e^{alpha (s(x,p) + delta)}), P+ the proxies of the
    classes present in the batch. Proxies start at kaiming_normal(fan_out), as the authors' code
    (std sqrt(2/C)). Not in the paper code; same math as PML's ProxyAnchorLoss."""

    Knobs = ProxyAnchorKnobs

    def __init__(self, knobs: ProxyAnchorKnobs = ProxyAnchorKnobs(), num_classes: int = 2, embed_dim: int = 2) -> None:
        super().__init__(knobs)
        self.margin = knobs.margin
        self.alpha = knobs.alpha
        self.proxies = nn.Parameter(nn.init.kaiming_normal_(torch.empty(num_classes, embed_dim), mode="fan_out"))

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: None) -> torch.Tensor:
        cos = cosine(embeddings, self.proxies)  # (B, C)
        positive = F.one_hot(labels, cos.shape[1]).bool()
        pos = (-self.alpha * (cos - self.margin)).masked_fill(~positive, float("-inf"))
        neg = (self.alpha * (cos + self.margin)).masked_fill(positive, float("-inf"))
        one = cos.new_zeros(1, cos.shape[1])  # log(1 + sum e^z) = logsumexp([0, z...])
        pos_term = torch.logsumexp(torch.cat([one, pos]), dim=0)  # 0 for proxies without positives
        neg_term = torch.logsumexp(torch.cat([one, neg]), dim=0)
        return pos_term.sum() / positive.any(dim=0).sum() + neg_term.mean()
