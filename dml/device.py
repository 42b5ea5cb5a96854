"""Where tensors live and in which precision the forward pass runs (``train.device``,
``train.amp``): one place that turns the params into a ``torch.device`` and an autocast context."""

from __future__ import annotations

import contextlib

import torch

from dml.config import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but torch sees no CUDA device (use auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass on CUDA; on CPU (and with amp off) a no-op, so CPU
    runs stay bit-reproducible in float32."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """Loss scaling, needed for fp16 only (bf16 has float32's exponent range)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")
