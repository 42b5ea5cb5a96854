"""Classification losses (normalised softmax, ArcFace, SoftTriple): a cross-entropy over the
training classes on cosine logits against learnable class weights or centres. They use the whole
batch (no miner); labels are the contiguous training class ids 0..C-1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dml.losses.base import Loss
from dml.losses.config import ArcFaceKnobs, SoftmaxKnobs, SoftTripleKnobs

# acos has an infinite derivative at +-1; the target cosine is kept this far inside. (The paper
# code's 1 - 1e-10 rounds to 1.0 in float32, so it does not guard anything there.)
ACOS_EPS = 1e-7
# sqrt has an infinite derivative at 0 (two coinciding centres); the SoftTriple authors' constant.
CENTER_REG_EPS = 1e-5


def cosine(embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, N) cosines between the rows of ``embeddings`` and of ``weights``. The embeddings are
    normalised here too, so the logits are cosines whatever the model emits; for embeddings the
    model already normalised this is the identity (value and gradient)."""
    return F.normalize(embeddings, dim=1) @ F.normalize(weights, dim=1).t()


def _uniform(rows: int, cols: int, bound: float) -> torch.Tensor:
    """U(-bound, bound) from torch's global generator (the training loop seeds it)."""
    return torch.empty(rows, cols).uniform_(-bound, bound)


class NormalizedSoftmaxLoss(Loss):
    """Normalised softmax (Zhai & Wu 2018): cross-entropy of cos(x, w_c) / temperature, with one
    learnable weight row per class, unit-normalised in the forward pass. Weights start at
    U(+-1/sqrt(D)) as in the paper code. Same math as the paper code."""

    Knobs = SoftmaxKnobs

    def __init__(self, knobs: SoftmaxKnobs = SoftmaxKnobs(), num_classes: int = 2, embed_dim: int = 2) -> None:
        super().__init__(knobs)
        self.temperature = knobs.temperature
        self.weight = nn.Parameter(_uniform(num_classes, embed_dim, 1.0 / math.sqrt(embed_dim)))

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: None) -> torch.Tensor:
        return F.cross_entropy(cosine(embeddings, self.weight) / self.temperature, labels)


class ArcFaceLoss(Loss):
    """ArcFace (Deng et al. 2019), as the paper's Algorithm 1: the target logit cos(theta_y) becomes
    cos(theta_y + m), the other logits stay cos(theta_c); all are scaled by s; cross-entropy.
    Weights (one row per class, normalised in the forward pass) start at U(+-1/sqrt(D)).

    Deviations from the paper code: (1) its version of the paper era added the margin to every
    logit of the row, where it cancels (method-zoo bug 1); here only the target gets it. (2) It
    clamped *every* cosine to [1e-10, 1 - 1e-10], which floors all negative cosines (non-target
    ones too) at 0 with zero gradient, something ArcFace does not do; here only the target cosine
    is clamped, to [-1 + 1e-7, 1 - 1e-7], to keep acos differentiable. Like Algorithm 1 (and the
    paper code), there is no fallback for theta_y > pi - m, where cos(theta_y + m) stops
    decreasing; PML's ArcFaceLoss (and insightface) switch to cos(theta_y) - m sin(m) there, so
    they agree with this loss wherever theta_y + m <= pi."""

    Knobs = ArcFaceKnobs

    def __init__(self, knobs: ArcFaceKnobs = ArcFaceKnobs(), num_classes: int = 2, embed_dim: int = 2) -> None:
        super().__init__(knobs)
        self.margin = knobs.margin
        self.scale = knobs.scale
        self.weight = nn.Parameter(_uniform(num_classes, embed_dim, 1.0 / math.sqrt(embed_dim)))

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: None) -> torch.Tensor:
        cos = cosine(embeddings, self.weight)
        target = cos.gather(1, labels[:, None])
        theta = torch.acos(target.clamp(-1.0 + ACOS_EPS, 1.0 - ACOS_EPS))
        logits = cos.scatter(1, labels[:, None], torch.cos(theta + self.margin))
        return F.cross_entropy(self.scale * logits, labels)


class SoftTripleLoss(Loss):
    """SoftTriple (Qian et al. 2019), the original method (as PML's SoftTripleLoss): K centres
    per class, each unit-normalised; the class similarity is the softmax(sim / gamma)-weighted
    mean of the similarities to the class's K centres; cross-entropy of la * (class similarity -
    delta on the target); plus reg_weight * the centre regulariser
    sum_c sum_{k<k'} sqrt(2 - 2 w_ck . w_ck') / (C K (K-1)), which pulls a class's centres
    together so that redundant ones merge (zero for K = 1). Centres start at U(+-1/sqrt(CK)), as
    the authors' kaiming_uniform(a=sqrt(5)) and the paper code give; ``centers[k, c]`` is
    centre k of class c.

    Deviations from the paper code, which departs from the original in three ways (method-zoo
    section 1): it normalises the (D, CK) centre matrix along dim 1, i.e. per embedding
    dimension instead of per centre; its soft assignment is a softmax over the classes instead
    of over each class's K centres; and it scales by gamma instead of 1/gamma. It also crashes
    on a misnamed lr option (bug 2); here the centres' lr is the network lr times ``optim.lr``."""

    Knobs = SoftTripleKnobs

    def __init__(self, knobs: SoftTripleKnobs = SoftTripleKnobs(), num_classes: int = 2, embed_dim: int = 2) -> None:
        super().__init__(knobs)
        self.num_classes = num_classes
        self.k = knobs.centers_per_class
        self.la = knobs.la
        self.gamma = knobs.gamma
        self.margin = knobs.margin
        self.reg_weight = knobs.reg_weight
        total = num_classes * self.k
        # (K, C, D): centres[k, c] is centre k of class c. Class-minor, so that the softmax over a
        # class's K centres runs over a non-innermost dim, which is ~15x faster on CPU for K = 2.
        bound = 1.0 / math.sqrt(total)
        self.centers = nn.Parameter(_uniform(total, embed_dim, bound).view(self.k, num_classes, embed_dim))

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, tuples: None) -> torch.Tensor:
        sim = cosine(embeddings, self.centers.flatten(0, 1)).view(-1, self.k, self.num_classes)
        assignment = F.softmax(sim / self.gamma, dim=1)
        class_sim = (assignment * sim).sum(dim=1)
        target = F.one_hot(labels, self.num_classes).to(class_sim.dtype)
        loss = F.cross_entropy(self.la * (class_sim - self.margin * target), labels)
        if self.k > 1 and self.reg_weight > 0:
            loss = loss + self.reg_weight * self.center_regularizer()
        return loss

    def center_regularizer(self) -> torch.Tensor:
        """Mean over each class's centre pairs k < k' of ||w_ck - w_ck'|| (unit centres), the sum
        divided by C K (K-1) as in the paper; per class, so O(C K^2 D) and not O((CK)^2 D)."""
        w = F.normalize(self.centers, dim=2)
        upper = torch.triu_indices(self.k, self.k, offset=1, device=w.device)
        sim = (w[upper[0]] * w[upper[1]]).sum(dim=2)  # (pairs, C)
        dist = torch.sqrt((2.0 - 2.0 * sim).clamp_min(0.0) + CENTER_REG_EPS)
        return dist.sum() / (self.num_classes * self.k * (self.k - 1))
