"""The one shape every dataset reader returns (:class:`RawDataset`: paths, labels, class names,
splits) and what the readers share: finding the dataset folder under ``data.root``, reading
annotation rows strictly, and the seeded class-disjoint splits (also the val hold-out of
``prepare``). The readers themselves are in ``formats_benchmarks`` / ``formats_generic``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dml.data.config import DataConfig
from dml.errors import DatasetError

# Salts of the seeded class splits, so that the train/test and the val draws of one data.seed are
# independent streams.
_TEST_SALT, _VAL_SALT = 0, 1


@dataclass(frozen=True)
class RawDataset:
    """One row per image, parallel lists. ``paths`` are POSIX, relative to ``image_root``;
    ``class_names[i]`` names ``labels[i]`` (the same name for every row of a label)."""

    image_root: Path
    ids: list[int]
    paths: list[str]
    labels: list[int]
    class_names: list[str]
    splits: list[str]

    def __post_init__(self) -> None:
        lengths = {len(self.ids), len(self.paths), len(self.labels), len(self.class_names), len(self.splits)}
        if len(lengths) != 1:
            raise ValueError(f"RawDataset columns have different lengths {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: Sequence[int]) -> RawDataset:
        """The dataset restricted to ``rows`` (in that order)."""
        return dataclasses.replace(
            self, **{name: [getattr(self, name)[i] for i in rows] for name in ("ids", "paths", "labels", "class_names", "splits")}
        )

    def with_splits(self, splits: list[str]) -> RawDataset:
        return dataclasses.replace(self, splits=splits)


Reader = Callable[[Path, DataConfig], RawDataset]


def find_root(root: Path, marker: str, shown: str, expected: str) -> Path:
    """The folder holding the file ``marker``: ``root`` itself, else a folder one, else two levels
    below (users point data.root at the dataset folder or at a folder that contains it). Errors
    read "data.root: <root> has no <shown> (expected <expected>)"."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DatasetError(f"data.root: {root} {what} (expected {expected})")
    for pattern in (marker, f"*/{marker}", f"*/*/{marker}"):
        found = sorted(p.parent for p in root.glob(pattern) if p.is_file() and not _hidden(p.relative_to(root)))
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(str(p) for p in found[:3])
            raise DatasetError(f"data.root: {root} holds several datasets ({listed}); point data.root at one of them")
    raise DatasetError(f"data.root: {root} has no {shown} (expected {expected})")


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts[:-1])


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (a file of the official layout)")
    return path


def read_rows(path: Path, columns: int, skip: int = 0) -> list[list[str]]:
    """The whitespace-separated rows of a text annotation file, each split into exactly
    ``columns`` fields (the last one keeps any inner spaces); blank lines are ignored."""
    rows = []
    with open(_need(path), encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip or not line.strip():
                continue
            fields = line.split(None, columns - 1)
            if len(fields) != columns:
                raise DatasetError(f"{path}: line {number} has {len(fields)} field(s), expected {columns}: {line.strip()[:80]!r}")
            fields[-1] = fields[-1].rstrip()
            rows.append(fields)
    return rows


def split_classes(classes: Sequence, fraction: float, seed: int, salt: int) -> set:
    """A seeded share of ``classes``: shuffle their sorted order with ``(seed, salt)`` and take the
    first ``round(fraction * n)`` (at least one, and one fewer than all when there are two or more)."""
    ordered = sorted(set(classes))
    if not ordered or fraction <= 0:
        return set()
    count = min(max(round(fraction * len(ordered)), 1), max(len(ordered) - 1, 1))
    order = np.random.default_rng([seed, salt]).permutation(len(ordered))
    return {ordered[i] for i in order[:count]}


def class_disjoint_splits(labels: Sequence[int], cfg: DataConfig) -> list[str]:
    """train/test by class for layouts without splits: ``train_fraction`` of the classes train."""
    train = split_classes(labels, cfg.train_fraction, cfg.seed, _TEST_SALT)
    return ["train" if label in train else "test" for label in labels]


def hold_out_val(dataset: RawDataset, fraction: float, seed: int) -> RawDataset:
    """Move a seeded ``fraction`` of the train classes, all their images, into split "val"."""
    train_labels = [label for label, split in zip(dataset.labels, dataset.splits) if split == "train"]
    val = split_classes(train_labels, fraction, seed, _VAL_SALT)
    if not val:
        return dataset
    if len(set(train_labels)) < 2:
        raise DatasetError(f"data.val_classes: the train split has {len(set(train_labels))} class; val needs another one")
    return dataset.with_splits(["val" if s == "train" and y in val else s for s, y in zip(dataset.splits, dataset.labels)])
