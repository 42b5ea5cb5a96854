"""Label-driven batch samplers: an iterable of index batches per epoch.

Samplers draw from a ``numpy.random.Generator`` passed per epoch, so a resumed run replays the
same batches. An epoch has ``len(labels) // batch_size`` batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np



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
