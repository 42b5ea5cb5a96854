"""Per-miner knobs: one small typed model per ``miner.name`` (``params.yaml``:
``miner.<name>.<knob>``), with what each miner produces, declared torch-free so that a loss and
a miner that cannot work together fail the params check before anything runs.

``miner.name: auto`` picks the selected loss's own default miner (``dml/losses/config.py``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from dml.schema import MethodChoice, Section, TupleKind


class MinerKnobs(Section):
    produces: ClassVar[TupleKind | None] = "triplets"
    needs_normalized: ClassVar[bool] = False  # its rule assumes embeddings on the unit sphere


class RandomKnobs(MinerKnobs):
    """A uniformly random positive and negative per anchor (the paper's weak baseline)."""


class SemihardKnobs(MinerKnobs):
    """FaceNet: a random negative with d_ap < d_an < d_ap + margin (random fallback)."""

    margin: float = Field(0.2, ge=0.0, description="semi-hard band width (RDML takes the loss's margin)")


class SofthardKnobs(MinerKnobs):
    """A positive farther than the closest negative and a negative closer than the farthest positive."""


class DistanceKnobs(MinerKnobs):
    """Wu et al. 2017: negatives drawn with weight 1/q(d), q the distance density on the unit sphere."""

    needs_normalized: ClassVar[bool] = True
    lower_cutoff: float = Field(0.5, ge=0.0, le=2.0, description="distances clipped below")
    upper_cutoff: float = Field(1.4, gt=0.0, le=2.0, description="negatives at or beyond get weight 0 (Wu et al.; RDML disables it)")

    @model_validator(mode="after")
    def _ordered(self) -> DistanceKnobs:
        if self.upper_cutoff <= self.lower_cutoff:
            raise ValueError(f"upper_cutoff {self.upper_cutoff} must exceed lower_cutoff {self.lower_cutoff}")
        return self


class RhoDistanceKnobs(DistanceKnobs):
    """Roth et al. 2020: a distance triplet, or with probability p a same-class sample pushed away."""

    p: float = Field(0.35, ge=0.0, le=1.0, description="probability of a regularising (anchor, anchor, same-class) triplet")


class NPairKnobs(MinerKnobs):
    """Per anchor one random positive; every other-class sample of the batch is a negative."""

    produces: ClassVar[TupleKind | None] = "npair"


class LiftedKnobs(MinerKnobs):
    """Per anchor all its positives and all its negatives."""

    produces: ClassVar[TupleKind | None] = "lifted"


class NoneKnobs(MinerKnobs):
    """No mining: the loss reads the whole batch (classification, proxy, multi-similarity, histogram)."""

    produces: ClassVar[TupleKind | None] = None


MinerName = Literal["random", "semihard", "softhard", "distance", "rho_distance", "npair", "lifted", "none"]


class MinerSection(MethodChoice):
    """``miner:`` in params.yaml. ``name: auto`` is resolved to the loss's default miner when the
    params are parsed, so everything downstream sees a concrete name."""

    name: MinerName | Literal["auto"] = Field("auto", description="auto = the loss's default miner")
    random: RandomKnobs = RandomKnobs()
    semihard: SemihardKnobs = SemihardKnobs()
    softhard: SofthardKnobs = SofthardKnobs()
    distance: DistanceKnobs = DistanceKnobs()
    rho_distance: RhoDistanceKnobs = RhoDistanceKnobs()
    npair: NPairKnobs = NPairKnobs()
    lifted: LiftedKnobs = LiftedKnobs()
    none: NoneKnobs = NoneKnobs()
