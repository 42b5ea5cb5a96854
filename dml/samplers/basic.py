"""Label-driven batch samplers: an iterable of index batches per epoch.

Samplers draw from a ``numpy.random.Generator`` passed per epoch, so a resumed run replays the
same batches. An epoch has ``len(labels) // batch_size`` batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class BatchSampler(Protocol):
    """What the training loop reads: ``len(sampler)`` batches per epoch, drawn from ``rng``."""

    def __len__(self) -> int: ...

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]: ...


class ClassMembers:
    """Every class's member indices in one padded table (classes x largest class, -1 padded),
    so that drawing members for many classes at once is a few array operations."""

    def __init__(self, labels: np.ndarray) -> None:
        _, self.class_of = np.unique(np.asarray(labels), return_inverse=True)
        self.sizes = np.bincount(self.class_of)
        order = np.argsort(self.class_of, kind="stable")
        starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.table = np.full((len(self.sizes), self.sizes.max()), -1, dtype=np.int64)
        self.table[self.class_of[order], np.arange(len(order)) - starts[self.class_of[order]]] = order

    @property
    def num_classes(self) -> int:
        return len(self.sizes)

    def with_replacement(self, classes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """(len(classes), n): n members of each class, each drawn uniformly with replacement."""
        offsets = (rng.random((len(classes), n)) * self.sizes[classes][:, None]).astype(np.int64)
        return self.table[classes[:, None], offsets]

    def without_replacement(
        self, classes: np.ndarray, n: int, rng: np.random.Generator, first: np.ndarray | None = None
    ) -> np.ndarray:
        """(len(classes), n): n distinct members of each class in random order; a class with fewer
        than n members gives all of them, then members drawn with replacement. With ``first``, row
        i starts with the member ``first[i]`` and continues with other members of its class."""
        rows = self.table[classes]
        keys = rng.random(rows.shape)
        keys[rows < 0] = 2.0  # padding sorts last
        if first is not None:
            keys[rows == np.asarray(first)[:, None]] = -1.0  # the given member sorts first
        distinct = min(n, rows.shape[1])
        out = np.empty((len(classes), n), dtype=np.int64)
        out[:, :distinct] = np.take_along_axis(rows, np.argsort(keys, axis=1)[:, :distinct], axis=1)
        small = self.sizes[classes] < n
        if small.any():
            beyond = np.arange(n) >= self.sizes[classes[small]][:, None]
            out[small] = np.where(beyond, self.with_replacement(classes[small], n, rng), out[small])
        return out


class RandomSampler:
    """Uniformly shuffled batches, no class structure."""

    def __init__(self, labels: np.ndarray, batch_size: int) -> None:
        self.labels = np.asarray(labels)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        order = rng.permutation(len(self.labels))
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]


class ClassBalancedSampler(RandomSampler):
    """SPC-n: each batch holds ``batch_size / n`` distinct classes with ``n`` images each (drawn
    without replacement, or with replacement for classes smaller than ``n``)."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int) -> None:
        super().__init__(labels, batch_size)
        if batch_size % samples_per_class:
            raise ValueError(f"train.batch_size {batch_size} is not a multiple of sampler.samples_per_class")
        self.samples_per_class = samples_per_class
        self.classes, inverse = np.unique(self.labels, return_inverse=True)
        self.members = [np.flatnonzero(inverse == c) for c in range(len(self.classes))]
        self.classes_per_batch = min(batch_size // samples_per_class, len(self.classes))

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        n = self.samples_per_class
        for _ in range(len(self)):
            chosen = rng.choice(len(self.classes), size=self.classes_per_batch, replace=False)
            yield np.concatenate(
                [rng.choice(self.members[c], size=n, replace=len(self.members[c]) < n) for c in chosen]
            )


class ClassRandomSampler(RandomSampler):
    """The paper code's SPC-n: ``batch_size / n`` classes drawn uniformly *with* replacement (a
    class can fill several slots), ``n`` images per draw also with replacement (an image can
    repeat). Unlike ``class_balanced``, nothing is guaranteed distinct."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int) -> None:
        super().__init__(labels, batch_size)
        if batch_size % samples_per_class:
            raise ValueError(f"train.batch_size {batch_size} is not a multiple of sampler.class_random.samples_per_class")
        self.samples_per_class = samples_per_class
        self.members = ClassMembers(self.labels)

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        draws = self.batch_size // self.samples_per_class
        for _ in range(len(self)):
            classes = rng.integers(self.members.num_classes, size=draws)
            yield self.members.with_replacement(classes, self.samples_per_class, rng).ravel()


class FullRandomSampler(RandomSampler):
    """``batch_size - 1`` images, each of a uniformly drawn class (classes and images with
    replacement, as the paper code's ``full_random``), plus one more image of a class already in
    the batch. The paper code draws that extra image from the whole class, so it can be the same
    image and the batch then has no positive pair; here it is another image of the class (the
    anchor is drawn among the batch's images whose class has two or more)."""

    def __init__(self, labels: np.ndarray, batch_size: int) -> None:
        super().__init__(labels, batch_size)
        self.members = ClassMembers(self.labels)

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        pairable = self.members.sizes >= 2
        for _ in range(len(self)):
            classes = rng.integers(self.members.num_classes, size=self.batch_size - 1)
            images = self.members.with_replacement(classes, 1, rng)[:, 0]
            candidates = np.flatnonzero(pairable[classes])
            anchor = rng.choice(candidates) if len(candidates) else rng.integers(len(images))  # no class of 2: no pair possible
            partner = self.members.without_replacement(classes[[anchor]], 2, rng, first=images[[anchor]])[0, 1]
            yield np.append(images, partner)
