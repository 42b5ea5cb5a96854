"""Base models of the params schema, shared by ``dml/config.py`` and the per-method knob models
that live in each component family (``dml/losses/config.py``, ``dml/miners/config.py``, ...).

Torch-free on purpose: every stage validates the whole params file first, and the stages that
never touch a network (prepare, index, evaluate, report) should not pay for importing torch.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The tuple shapes a miner produces and a loss consumes (``dml/tuples.py``), named here, torch-free,
# so that both families' knobs declare them and a mismatch fails the params check.
TupleKind = Literal["triplets", "npair", "lifted"]


class Section(BaseModel):
    """Base of every section: unknown keys are errors (a typo must never be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        # `.inf` / `.nan` parse as floats in YAML; no knob of this pipeline means anything there.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class MethodChoice(Section):
    """A method family's section (``loss``, ``miner``, ``sampler``): ``name`` selects a method and
    one field per method, named after it, holds that method's knobs."""

    @property
    def knobs(self) -> Section:
        """The selected method's knobs."""
        return getattr(self, self.name)


class ParamOptim(Section):
    """The optimiser group of a component's own parameters (margin loss's beta, proxies, class
    weights, SoftTriple centres): each method has its own learning-rate rule in the paper, either
    an absolute rate or a multiple of the network's (``optim.lr``)."""

    lr: float = Field(gt=0.0, description="learning rate; a multiple of optim.lr when lr_relative")
    lr_relative: bool = Field(False, description="lr is a multiplier of optim.lr instead of an absolute rate")
    weight_decay: float = Field(0.0, ge=0.0)

    def learning_rate(self, model_lr: float) -> float:
        return self.lr * model_lr if self.lr_relative else self.lr
