"""Atomic output writing: a stage that fails half-way leaves its previous outputs untouched.

DVC stage outputs are declared ``persist: true`` so DVC does not delete them before a run; the
stages then replace them only once the new version is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dml.errors import DatasetError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover_leftovers(path: Path) -> None:
    """Clean up after a writer of ``path`` that was killed (its pid is gone): its half-written
    ``.<name>.tmp-<pid>`` is deleted; its ``.<name>.old-<pid>`` (the previous version, moved aside
    just before the swap) is put back if ``path`` is missing, else deleted."""
    for leftover in sorted(path.parent.glob(f".{path.name}.*-*")):
        kind, _, pid = leftover.name.removeprefix(f".{path.name}.").partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "old" and not path.exists():
            leftover.rename(path)
        else:
            _remove(leftover)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_leftovers(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_leftovers(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def safe_load(path: Path | str, what: str) -> Any:
    """``torch.load`` of a file this pipeline wrote, with ``weights_only=True`` (tensors and plain
    data only: a file dropped in its place cannot run code); anything else is one clear error."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DatasetError(f"{path}: not a {what} this pipeline wrote, refusing to load it ({reason}); delete it") from None


def write_json(path: Path | str, payload: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (archives, weights, models of any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
