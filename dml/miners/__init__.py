"""Batch miners: ``miner.name`` in params.yaml -> a :class:`Miner`."""

from __future__ import annotations

from collections.abc import Callable

from dml.config import MinerConfig
from dml.miners.base import Miner, Triplets, pairwise_distances
from dml.miners.distance import DistanceWeightedMiner, RhoDistanceMiner
from dml.miners.simple import RandomMiner, SemiHardMiner

MINERS: dict[str, Callable[[MinerConfig, int], Miner]] = {
    "random": lambda cfg, seed: RandomMiner(seed=seed),
    "semihard": lambda cfg, seed: SemiHardMiner(cfg.semihard_margin, seed=seed),
    "distance": lambda cfg, seed: DistanceWeightedMiner(cfg.lower_cutoff, cfg.upper_cutoff, seed=seed),
    "rho_distance": lambda cfg, seed: RhoDistanceMiner(cfg.rho_p, cfg.lower_cutoff, cfg.upper_cutoff, seed=seed),
}


def build_miner(cfg: MinerConfig, seed: int) -> Miner:
    try:
        return MINERS[cfg.name](cfg, seed)
    except KeyError:
        raise ValueError(f"miner.name: unknown {cfg.name!r}; expected one of {sorted(MINERS)}") from None


__all__ = ["MINERS", "Miner", "Triplets", "build_miner", "pairwise_distances"]
