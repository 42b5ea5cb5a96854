"""Per-loss knobs: one small typed model per ``loss.name``, with the paper code's defaults
(``../shared/reference/method-zoo.md`` section 1). ``params.yaml`` holds them as
``loss.<name>.<knob>``; only the selected loss's knobs reach training (and its fingerprint), so
editing another loss's knob retrains nothing.

Each model also *declares* what the loss needs, torch-free so that the whole params file is
checked before any stage runs:

* ``consumes``: the tuple shape the loss reads from the miner: ``"triplets"`` (anchor, positive,
  negative), ``"npair"`` (anchor, one positive, every other-class sample), ``"lifted"`` (anchor,
  all positives, all negatives) or ``None`` (the whole batch; no miner);
* ``default_miner``: what ``miner.name: auto`` resolves to;
* ``needs``: what the loss is built from besides its knobs (``num_classes``, ``embed_dim``);
* ``normalized_embeddings``: whether it runs on L2-normalised embeddings (``model.normalize:
  auto`` follows it);
* ``needs_two_classes``: whether a batch must hold two classes for the loss to see anything.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from dml.schema import MethodChoice, ParamOptim, Section, TupleKind


class LossKnobs(Section):
    consumes: ClassVar[TupleKind | None] = "triplets"
    default_miner: ClassVar[str] = "distance"
    needs: ClassVar[tuple[str, ...]] = ()
    needs_two_classes: ClassVar[bool] = True  # a batch of one class gives it nothing to learn from

    @property
    def normalized_embeddings(self) -> bool:
        return True


class TripletKnobs(LossKnobs):
    """relu(d_ap^2 - d_an^2 + margin), mean over the mined triplets (zeros included)."""

    margin: float = Field(0.2, ge=0.0)


class ContrastiveKnobs(LossKnobs):
    """mean relu(d_ap - pos_margin) + mean relu(neg_margin - d_an) over the triplets' pairs."""

    pos_margin: float = Field(0.0, ge=0.0)
    neg_margin: float = Field(1.0, ge=0.0)


class MarginKnobs(LossKnobs):
    """Wu et al. 2017: positives closer than beta - alpha, negatives beyond beta + alpha, learnable beta."""

    needs: ClassVar[tuple[str, ...]] = ("num_classes",)
    alpha: float = Field(0.2, ge=0.0, description="half-width of the margin around beta")
    beta: float = Field(1.2, description="initial boundary")
    beta_per_class: bool = Field(True, description="one beta per training class (else one shared)")
    nu: float = Field(0.0, ge=0.0, description="weight of the beta regulariser nu * sum(beta)")
    optim: ParamOptim = ParamOptim(lr=5e-4)


class _Unnormalised(LossKnobs):
    normalize_embeddings: bool = Field(False, description="paper: trained and evaluated on unnormalised embeddings")

    @property
    def normalized_embeddings(self) -> bool:
        return self.normalize_embeddings


class LiftedKnobs(_Unnormalised):
    """Generalised lifted structure (Hermans et al.): relu(LSE_P d_ap + LSE_N (margin - d_an)) per anchor."""

    consumes: ClassVar[TupleKind | None] = "lifted"
    default_miner: ClassVar[str] = "lifted"
    margin: float = Field(1.0, ge=0.0)
    l2_weight: float = Field(0.005, ge=0.0, description="weight of mean ||x|| (embedding norm regulariser)")


class NPairKnobs(_Unnormalised):
    """Sohn 2016: log(1 + sum_n exp(x_a.x_n - x_a.x_p)) with every other-class sample as negative."""

    consumes: ClassVar[TupleKind | None] = "npair"
    default_miner: ClassVar[str] = "npair"
    l2_weight: float = Field(0.005, ge=0.0, description="weight of mean ||x|| (embedding norm regulariser)")


class AngularKnobs(_Unnormalised):
    """Wang et al. 2017: N-pair term + angular term on unit vectors, f = 4 tan^2(a) (x_a+x_p).x_n - 2 (1+tan^2(a)) x_a.x_p."""

    consumes: ClassVar[TupleKind | None] = "npair"
    default_miner: ClassVar[str] = "npair"
    alpha_degrees: float = Field(45.0, gt=0.0, lt=90.0)
    npair_weight: float = Field(1.0, ge=0.0)
    angular_weight: float = Field(2.0, ge=0.0)
    l2_weight: float = Field(0.005, ge=0.0)


class QuadrupletKnobs(LossKnobs):
    """Chen et al. 2017: triplet term + relu(d_ap - d(n, n') + alpha2), n' of a third class."""

    alpha1: float = Field(0.2, ge=0.0, description="margin of the triplet term")
    alpha2: float = Field(0.2, ge=0.0, description="margin of the term against a pair of two other classes")


class SNRKnobs(LossKnobs):
    """Yuan et al. 2019: triplet hinge on the signal-to-noise distance Var(a-b)/Var(a)."""

    margin: float = Field(0.2, ge=0.0)
    reg_weight: float = Field(0.005, ge=0.0, description="weight of mean |sum_k a_k| over anchors (zero-mean regulariser)")


class _WholeBatch(LossKnobs):
    """Losses that read the whole batch and mine nothing (or mine inside)."""

    consumes: ClassVar[TupleKind | None] = None
    default_miner: ClassVar[str] = "none"


class _ClassParameters(_WholeBatch):
    """Classification and proxy losses: learnable per-class weights / proxies / centres."""

    needs: ClassVar[tuple[str, ...]] = ("num_classes", "embed_dim")
    needs_two_classes: ClassVar[bool] = False  # the other classes are present as weights / proxies


class MultiSimilarityKnobs(_WholeBatch):
    """Wang et al. 2019: pairs mined inside the loss (epsilon), soft-weighted by alpha / beta around lambda."""

    alpha: float = Field(2.0, gt=0.0, description="positive weight")
    beta: float = Field(40.0, gt=0.0, description="negative weight")
    epsilon: float = Field(0.1, ge=0.0, description="mining margin")
    base: float = Field(0.5, description="similarity threshold lambda")


class HistogramKnobs(_WholeBatch):
    """Ustinova & Lempitsky 2016: probability that a negative pair is more similar than a positive one."""

    nodes: int = Field(65, ge=3, description="histogram nodes R in [-1, 1] (SOP: 11)")


class SoftmaxKnobs(_ClassParameters):
    """Normalised softmax (Zhai & Wu 2018): cross-entropy of cosine logits / temperature."""

    temperature: float = Field(0.05, gt=0.0)
    optim: ParamOptim = ParamOptim(lr=1e-5)


class ArcFaceKnobs(_ClassParameters):
    """Deng et al. 2019: additive angular margin on the target logit, scaled cosine cross-entropy."""

    margin: float = Field(0.5, ge=0.0, lt=math.pi / 2, description="angular margin in radians")
    scale: float = Field(16.0, gt=0.0)
    optim: ParamOptim = ParamOptim(lr=5e-4)


class SoftTripleKnobs(_ClassParameters):
    """Qian et al. 2019: K centres per class, soft assignment, large-margin softmax, centre regulariser."""

    centers_per_class: int = Field(2, ge=1, description="K")
    la: float = Field(8.0, gt=0.0, description="lambda: scale of the class logits")
    gamma: float = Field(0.1, gt=0.0, description="temperature of the soft assignment to centres (1/gamma scales it)")
    margin: float = Field(0.01, ge=0.0, description="delta")
    reg_weight: float = Field(0.2, ge=0.0, description="tau: weight of the centre-merging regulariser")
    optim: ParamOptim = ParamOptim(lr=1.0, lr_relative=True)


class ProxyNCAKnobs(_ClassParameters):
    """Movshovitz-Attias et al. 2017: NCA against one proxy per class, positive proxy left out of the denominator."""

    scale: float = Field(3.0, gt=0.0, description="embeddings and proxies are scaled to this norm")
    optim: ParamOptim = ParamOptim(lr=50.0, lr_relative=True)


class ProxyAnchorKnobs(_ClassParameters):
    """Kim et al. 2020: every proxy is an anchor against the batch's positives and negatives."""

    margin: float = Field(0.1, ge=0.0, description="delta")
    alpha: float = Field(32.0, gt=0.0)
    optim: ParamOptim = ParamOptim(lr=100.0, lr_relative=True)


LossName = Literal[
    "triplet", "contrastive", "margin", "lifted", "npair", "angular", "quadruplet", "snr",
    "multisimilarity", "histogram", "softmax", "arcface", "softtriple", "proxynca", "proxyanchor",
]  # fmt: skip


class LossSection(MethodChoice):
    """``loss:`` in params.yaml: the selected loss and every loss's knobs."""

    name: LossName = "margin"
    triplet: TripletKnobs = TripletKnobs()
    contrastive: ContrastiveKnobs = ContrastiveKnobs()
    margin: MarginKnobs = MarginKnobs()
    lifted: LiftedKnobs = LiftedKnobs()
    npair: NPairKnobs = NPairKnobs()
    angular: AngularKnobs = AngularKnobs()
    quadruplet: QuadrupletKnobs = QuadrupletKnobs()
    snr: SNRKnobs = SNRKnobs()
    multisimilarity: MultiSimilarityKnobs = MultiSimilarityKnobs()
    histogram: HistogramKnobs = HistogramKnobs()
    softmax: SoftmaxKnobs = SoftmaxKnobs()
    arcface: ArcFaceKnobs = ArcFaceKnobs()
    softtriple: SoftTripleKnobs = SoftTripleKnobs()
    proxynca: ProxyNCAKnobs = ProxyNCAKnobs()
    proxyanchor: ProxyAnchorKnobs = ProxyAnchorKnobs()
