"""Batch samplers (dml/samplers): batch composition checked against the labels by brute force,
epoch length against N // batch_size, reproducibility against a second run with the same seed,
and class-selection frequencies against the uniform rate (binomial tolerance)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dml.samplers.basic import ClassBalancedSampler, RandomSampler
from dml.samplers.config import SamplerSection
from dml.samplers.registry import SAMPLERS, build_sampler

# 10 classes of sizes 1, 2, 3, ..., 10 (55 samples), shuffled positions.
_SIZES = np.arange(1, 11)
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10) * 7 + 3, _SIZES))  # labels 3, 10, 17, ...


def _batches(sampler, seed: int) -> list[np.ndarray]:
    return list(sampler.epoch(np.random.default_rng(seed)))


@pytest.mark.parametrize("batch_size,n", [(12, 2), (12, 3), (8, 4), (20, 2)])
def test_class_balanced_batch_composition(batch_size, n):
    """Reference: brute-force label counts per batch: batch_size / n distinct classes, each with
    exactly n samples; indices in range; distinct within a class when the class has >= n members,
    the class's only members (repeated) when it has fewer; len == N // batch_size batches."""
    sampler = ClassBalancedSampler(LABELS, batch_size, n)
    assert len(sampler) == len(LABELS) // batch_size
    for seed in range(5):
        batches = _batches(sampler, seed)
        assert len(batches) == len(LABELS) // batch_size
        for batch in batches:
            assert batch.shape == (batch_size,)
            assert batch.min() >= 0 and batch.max() < len(LABELS)
            counts = Counter(LABELS[batch].tolist())
            assert len(counts) == batch_size // n and set(counts.values()) == {n}
            for cls in counts:
                idx = batch[LABELS[batch] == cls]
                members = np.flatnonzero(LABELS == cls)
                assert set(idx.tolist()) <= set(members.tolist())
                if len(members) >= n:
                    assert len(set(idx.tolist())) == n, "no repeats when the class is large enough"
                elif len(members) == 1:
                    assert idx.tolist() == [members[0]] * n


def test_class_balanced_small_classes_with_replacement():
    """Reference: by hand: a 1-member class in an SPC-4 batch appears as its single index 4 times;
    a 2-member class is drawn with replacement (some batch shows a repeated index)."""
    labels = np.array([0, 1, 1, 2, 2, 2, 2, 2])
    sampler = ClassBalancedSampler(labels, 8, 4)  # 2 classes of the 3 per batch
    repeated_pair = False
    for seed in range(30):
        for batch in _batches(sampler, seed):
            lab = labels[batch]
            if 0 in lab:
                assert batch[lab == 0].tolist() == [0, 0, 0, 0]
            if 1 in lab:
                idx = batch[lab == 1]
                assert len(idx) == 4 and set(idx.tolist()) <= {1, 2}
                repeated_pair |= len(set(idx.tolist())) < 4
    assert repeated_pair


def test_class_balanced_same_seed_same_batches():
    """Reference: the sampler itself: two epochs drawn from generators with the same seed are
    identical (also from a fresh sampler instance); another seed gives other batches."""
    a = _batches(ClassBalancedSampler(LABELS, 12, 2), 42)
    b = _batches(ClassBalancedSampler(LABELS, 12, 2), 42)
    c = _batches(ClassBalancedSampler(LABELS, 12, 2), 43)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_class_balanced_class_frequencies_uniform():
    """Reference: each batch picks batch_size/n of the C classes uniformly without replacement, so
    each class appears in a batch with probability (batch_size/n)/C = 0.6; over 2,000 epochs x 4
    batches every class's rate is within 5 binomial standard deviations of that."""
    sampler = ClassBalancedSampler(LABELS, 12, 2)
    rng = np.random.default_rng(1)
    hits = Counter()
    total = 0
    for _ in range(2000):
        for batch in sampler.epoch(rng):
            hits.update(set(LABELS[batch].tolist()))
            total += 1
    p = 6 / 10
    sigma = np.sqrt(p * (1 - p) / total)
    for cls in np.unique(LABELS):
        assert abs(hits[cls] / total - p) <= 5 * sigma, cls


def test_class_balanced_rejects_non_multiple_batch():
    """Reference: the documented constraint batch_size % samples_per_class == 0."""
    with pytest.raises(ValueError, match="multiple"):
        ClassBalancedSampler(LABELS, 10, 3)


def test_class_balanced_fewer_classes_than_slots():
    """Reference: by hand: 2 classes but room for 4 -> every batch holds both classes with n each
    (classes_per_batch = min(batch_size // n, C))."""
    labels = np.array([5, 5, 5, 9, 9, 9, 9, 9])
    sampler = ClassBalancedSampler(labels, 8, 2)
    assert len(sampler) == 1
    (batch,) = _batches(sampler, 0)
    assert sorted(labels[batch].tolist()) == [5, 5, 9, 9]


def test_random_sampler_is_a_permutation_prefix():
    """Reference: numpy's rng.permutation(N) with the same seed, cut into N // batch_size batches
    (the remainder dropped); batches are disjoint."""
    sampler = RandomSampler(LABELS, 8)
    batches = _batches(sampler, 7)
    assert len(sampler) == len(batches) == 55 // 8
    expected = np.random.default_rng(7).permutation(55)[: 6 * 8].reshape(6, 8)
    np.testing.assert_array_equal(np.stack(batches), expected)
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == len(flat)


def test_build_sampler_passes_config_values():
    """Reference: the SamplerSection fields: name selects the class, its knobs reach it."""
    assert set(SAMPLERS) == {"random", "class_balanced"}
    s = build_sampler(SamplerSection(name="class_balanced", class_balanced={"samples_per_class": 4}), LABELS, 16)
    assert isinstance(s, ClassBalancedSampler) and s.samples_per_class == 4 and s.batch_size == 16
    r = build_sampler(SamplerSection(name="random"), LABELS, 16)
    assert type(r) is RandomSampler and len(r) == 55 // 16
