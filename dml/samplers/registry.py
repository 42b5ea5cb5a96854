"""``sampler.name`` in params.yaml -> the sampler built from its knobs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dml.registry import lookup
from dml.samplers.basic import ClassBalancedSampler, RandomSampler
from dml.samplers.config import SamplerSection

SAMPLERS: dict[str, Callable[[SamplerSection, np.ndarray, int], RandomSampler]] = {
    "random": lambda cfg, labels, batch_size: RandomSampler(labels, batch_size),
    "class_balanced": lambda cfg, labels, batch_size: ClassBalancedSampler(labels, batch_size, cfg.class_balanced.samples_per_class),
}


def build_sampler(cfg: SamplerSection, labels: np.ndarray, batch_size: int) -> RandomSampler:
    return lookup(SAMPLERS, "sampler.name", cfg.name)(cfg, labels, batch_size)
