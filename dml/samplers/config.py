"""Per-sampler knobs: one small typed model per ``sampler.name`` (``params.yaml``:
``sampler.<name>.<knob>``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dml.schema import Section


class SamplerKnobs(Section):
    pass


class RandomSamplerKnobs(SamplerKnobs):
    """Uniformly shuffled batches, no class structure."""


class ClassBalancedKnobs(SamplerKnobs):
    """SPC-n: batch_size / n distinct classes with n images each, drawn without replacement."""

    samples_per_class: int = Field(4, ge=2, description="n: images per class in a batch")


SamplerName = Literal["random", "class_balanced"]


class SamplerSection(Section):
    name: SamplerName = "class_balanced"
    random: RandomSamplerKnobs = RandomSamplerKnobs()
    class_balanced: ClassBalancedKnobs = ClassBalancedKnobs()

    @property
    def knobs(self) -> SamplerKnobs:
        return getattr(self, self.name)
