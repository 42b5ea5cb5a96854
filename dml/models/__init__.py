"""Backbones: ``model.name`` in params.yaml -> an :class:`EmbeddingModel` (see ``registry.py``).

Kept import-light: the params schema imports ``dml.models.config`` without pulling in torch, so
the torch-side names below are imported on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dml.models.base import EmbeddingModel
    from dml.models.registry import MODELS, build_model, input_normalization, model_normalization

_LAZY = {
    "EmbeddingModel": "dml.models.base",
    "MODELS": "dml.models.registry",
    "build_model": "dml.models.registry",
    "input_normalization": "dml.models.registry",
    "model_normalization": "dml.models.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dml.models' has no attribute {name!r}")


__all__ = ["MODELS", "EmbeddingModel", "build_model", "input_normalization", "model_normalization"]
