"""The ``model`` section of params.yaml.

Torch-free on purpose (like ``dml/losses/config.py``): every stage validates the whole params
file first, and the stages that never touch a network should not pay for importing torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dml.schema import Section

Pooling = Literal["avg", "max", "avgmax"]


class ModelConfig(Section):
    name: Literal["small_cnn", "resnet50", "googlenet", "bninception"] = "small_cnn"
    embed_dim: int = Field(128, ge=2)
    pretrained: bool = Field(False, description="load ImageNet weights from a local file (never downloaded)")
    weights: str | None = Field(
        None,
        min_length=1,
        description="the ImageNet weights file; null = the torch hub cache, <torch.hub.get_dir()>/checkpoints/<official file name>; "
        "a relative path is relative to the repository root",
    )
    freeze_bn: bool = Field(False, description="keep every BatchNorm layer in eval mode during training")
    pooling: Pooling = Field("avg", description="global pooling of the last feature map: avg | max | avgmax (avg + max, the paper's 'double')")
    normalize: bool | Literal["auto"] = Field(
        "auto", description="L2-normalise the embedding; auto = what the loss runs on (resolved when parsed)"
    )

    @model_validator(mode="after")
    def _pretrained_needs_weights(self) -> ModelConfig:
        if self.pretrained and self.name == "small_cnn":
            raise ValueError("model.pretrained: small_cnn has no pretrained weights; set it to false")
        if self.weights is not None and not self.pretrained:
            raise ValueError(f"model.weights: {self.weights!r} is set but model.pretrained is false; set one or clear the other")
        return self
