"""Where tensors live and in which precision the forward pass runs (``train.device``,
``train.amp``): one place that turns the params into a ``torch.device``, places models and image
batches on it (channels-last on CUDA, the faster layout for convolutions there) and gives the
autocast context."""

from __future__ import annotations

import contextlib

import torch

from dml.errors import ConfigError

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


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` moved to ``device``, its weights channels-last on CUDA."""
    return model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)


def place_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of images moved to ``device`` (asynchronously from pinned memory), channels-last on CUDA."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images
