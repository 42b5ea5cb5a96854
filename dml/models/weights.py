"""ImageNet weights from a local file, checked against the hash in their official file name.

This pipeline runs offline: it never downloads. A missing file is one error that names the
file to place, where, and the official URL to fetch it from; a file whose SHA-256 does not start
with the hash prefix in its name (torch.hub's convention: ``resnet50-0676ba61.pth``) is one error
with the expected prefix and the actual digest, so a truncated download or a different model
saved under that name never trains silently.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from dml.errors import DatasetError
from dml.io import file_sha256
from dml.paths import repo_root

# torch.hub's HASH_REGEX (hex digits between a '-' and a '.'), with at least eight digits here, so
# a name like "resnet-bad.pth" is not taken for a hash. A name without one is loaded unchecked
# (model.weights may name any file); its SHA-256 is recorded in the model either way.
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    path: Path
    sha256: str


def hub_cache_path(url: str) -> Path:
    """Where torchvision's weights API caches ``url``: ``<torch.hub.get_dir()>/checkpoints/<file
    name>`` (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def expected_hash_prefix(path: Path) -> str | None:
    match = HASH_IN_NAME.search(path.name)
    return match.group(1) if match else None


def read_weights(path: Path, url: str, model_name: str) -> LoadedWeights:
    """The state dict in ``path``, verified by the hash prefix in its name (when it has one).
    ``url`` is the official file, named in the error when ``path`` is missing."""
    if not path.is_file():
        raise FileNotFoundError(
            f"model.pretrained: ImageNet weights for {model_name} not found at {path}; "
            f"download {url} there or set model.weights (this pipeline never downloads)"
        )
    sha256 = file_sha256(path)
    prefix = expected_hash_prefix(path)
    if prefix is not None and not sha256.startswith(prefix):
        raise DatasetError(f"{path}: SHA-256 mismatch: the file name expects {prefix}..., got {sha256}; re-download {url}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DatasetError(f"{path}: not a PyTorch state dict ({reason}); re-download {url}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DatasetError(f"{path}: not a state dict of tensors (got {type(state).__name__}); re-download {url}")
    return LoadedWeights(dict(state), path, sha256)


def resolve_weights_path(weights: str | None, url: str) -> Path:
    """``model.weights``: null = the torch hub cache location of ``url``; a relative path is
    relative to the repository root (``DVC_ROOT`` inside DVC, so also in ``dvc exp run --temp``)."""
    if weights is None:
        return hub_cache_path(url)
    path = Path(weights).expanduser()
    return path if path.is_absolute() else repo_root() / path
