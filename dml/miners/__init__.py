"""Batch miners: ``miner.name`` in params.yaml -> a :class:`Miner`."""

from __future__ import annotations

from collections.abc import Callable

from dml.config import MinerConfig
from dml.miners.base import Miner, Triplets, pairwise_distances
from dml.miners.distance import DistanceWeightedMiner, RhoDistanceMiner
from dml.miners.simple import RandomMiner, SemiHardMiner
from dml.registry import lookup

MINERS: dict[str, Callable[[MinerConfig, int], Miner]] = {
    "random": lambda cfg, seed: RandomMiner(seed=seed),
    "semihard": lambda cfg, seed: SemiHardMiner(cfg.semihard_margin, seed=seed),
    "distance": lambda cfg, seed: DistanceWeightedMiner(cfg.lower_cutoff, cfg.upper_cutoff, seed=seed),
    "rho_distance": lambda cfg, seed: RhoDistanceMiner(cfg.rho_p, cfg.lower_cutoff, cfg.upper_cutoff, seed=seed),
}


def build_miner(cfg: MinerConfig, seed: int) -> Miner:
    return lookup(MINERS, "miner.name", cfg.name)(cfg, seed)


__all__ = ["MINERS", "Miner", "Triplets", "build_miner", "pairwise_distances"]
