"""``miner.name`` in params.yaml -> the miner built from its knobs."""

from __future__ import annotations

from collections.abc import Callable

from dml.miners.base import Miner
from dml.miners.config import MinerSection
from dml.miners.distance import DistanceWeightedMiner, RhoDistanceMiner
from dml.miners.sets import LiftedMiner, NoMiner, NPairMiner
from dml.miners.simple import RandomMiner, SemiHardMiner, SoftHardMiner
from dml.registry import lookup

MINERS: dict[str, Callable[[MinerSection, int], Miner]] = {
    "random": lambda cfg, seed: RandomMiner(seed=seed),
    "semihard": lambda cfg, seed: SemiHardMiner(cfg.semihard.margin, seed=seed),
    "softhard": lambda cfg, seed: SoftHardMiner(seed=seed),
    "distance": lambda cfg, seed: DistanceWeightedMiner(cfg.distance.lower_cutoff, cfg.distance.upper_cutoff, seed=seed),
    "rho_distance": lambda cfg, seed: RhoDistanceMiner(
        cfg.rho_distance.p, cfg.rho_distance.lower_cutoff, cfg.rho_distance.upper_cutoff, seed=seed
    ),
    "npair": lambda cfg, seed: NPairMiner(seed=seed),
    "lifted": lambda cfg, seed: LiftedMiner(seed=seed),
    "none": lambda cfg, seed: NoMiner(seed=seed),
}


def build_miner(cfg: MinerSection, seed: int) -> Miner:
    return lookup(MINERS, "miner.name", cfg.name)(cfg, seed)
