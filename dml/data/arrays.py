"""The preprocessed format: per split, uint8 image arrays ready for fast loading.

``<root>/<split>/images.npy`` (N, C, H, W) uint8, ``labels.npy`` (N,) int64, ``ids.npy`` (N,)
int64, and ``<root>/stats.json`` with the channel mean/std of the *train* split (the models
normalise with it). ``images.npy`` is memory-mapped on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dml.errors import DatasetError

STATS_NAME = "stats.json"


@dataclass(frozen=True)
class SplitArrays:
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Stats:
    mean: list[float]
    std: list[float]
    channels: int
    image_size: int
    sha256: str  # of the train split's images and labels: identifies the data a model saw


def save_split(root: Path, split: str, arrays: SplitArrays) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", arrays.images)
    np.save(folder / "labels.npy", arrays.labels)
    np.save(folder / "ids.npy", arrays.ids)


def load_split(root: Path, split: str) -> SplitArrays:
    folder = Path(root) / split
    try:
        return SplitArrays(
            images=np.load(folder / "images.npy", mmap_mode="r"),
            labels=np.load(folder / "labels.npy"),
            ids=np.load(folder / "ids.npy"),
        )
    except FileNotFoundError as err:
        raise DatasetError(f"{err.filename}: preprocessed array missing (run the preprocess stage)") from None


def save_stats(root: Path, stats: Stats) -> None:
    (root / STATS_NAME).write_text(json.dumps(stats.__dict__, indent=2) + "\n")


def load_stats(root: Path) -> Stats:
    path = Path(root) / STATS_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: missing (run the preprocess stage)")
    return Stats(**json.loads(path.read_text()))
