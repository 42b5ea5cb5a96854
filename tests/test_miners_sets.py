"""Set miners (dml/miners/sets.py: NPairMiner, LiftedMiner, NoMiner) and the soft-hard triplet
miner (dml/miners/simple.py: SoftHardMiner): shapes and validity of every tuple against
brute-force class masks, the anchors (exactly the samples with a positive and a negative),
uniform draws against their probabilities (binomial tolerances, as in test_miners.py), and the
soft-hard rule by hand on a line and by brute force on random batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dml.miners.sets import LiftedMiner, NoMiner, NPairMiner
from dml.miners.simple import SoftHardMiner
from dml.tuples import PairSets, Triplets, pairwise_distances, sample_from_mask

# Uneven classes in shuffled order, non-contiguous ids, and two singletons (5 and 42: no anchor).
LABELS = np.array([3, 0, 1, 42, 2, 1, 3, 0, 3, 2, 1, 3, 5, 3, 2, 3])


def _x(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def _brute_force(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchors (samples with >= 1 same-class partner and >= 1 other-class sample), and the
    positive (same class, not self) and negative (other class) masks of the whole batch."""
    n = len(labels)
    pos = np.array([[labels[i] == labels[j] and i != j for j in range(n)] for i in range(n)])
    neg = np.array([[labels[i] != labels[j] for j in range(n)] for i in range(n)])
    anchors = np.array([i for i in range(n) if pos[i].any() and neg[i].any()], dtype=np.int64)
    return anchors, pos, neg


def _check_pairsets_shape(sets: PairSets, batch: int) -> None:
    assert sets.anchors.dtype == torch.long and sets.anchors.ndim == 1
    for mask in (sets.positives, sets.negatives):
        assert mask.dtype == torch.bool and mask.shape == (len(sets), batch)


def _binomial_ok(counts: np.ndarray, prob: np.ndarray, draws: int) -> bool:
    """Every empirical frequency within 5 binomial standard deviations of its probability."""
    freq = counts / draws
    sigma = np.sqrt(prob * (1 - prob) / draws)
    return bool(np.all(np.abs(freq - prob) <= 5 * sigma + 1e-12))


# --------------------------------------------------------------------------- N-pair miner


def test_npair_miner_tuples_valid():
    """Reference: brute-force masks: the anchors are exactly the samples with a positive and a
    negative (singletons 5 and 42 skipped); every anchor has exactly one positive, of its class
    and not itself; its negatives are exactly every other-class sample of the batch."""
    anchors, pos, neg = _brute_force(LABELS)
    for seed in range(5):
        sets = NPairMiner(seed=seed)(_x(len(LABELS), 8, seed), torch.from_numpy(LABELS))
        _check_pairsets_shape(sets, len(LABELS))
        assert np.array_equal(sets.anchors.numpy(), anchors)
        p = sets.positives.numpy()
        assert np.all(p.sum(1) == 1)
        assert np.all(pos[anchors][p]), "a positive must be same class and not the anchor"
        assert np.array_equal(sets.negatives.numpy(), neg[anchors])


def test_npair_miner_positive_uniform():
    """Reference: uniform over each anchor's positives (class sizes 2..6 -> 1..5 candidates),
    3,000 calls; every frequency within 5 binomial standard deviations, non-positives never drawn."""
    anchors, pos, _ = _brute_force(LABELS)
    miner = NPairMiner(seed=7)
    x, labels = _x(len(LABELS), 4, 0), torch.from_numpy(LABELS)
    calls = 3000
    counts = np.zeros((len(anchors), len(LABELS)))
    for _ in range(calls):
        counts += miner(x, labels).positives.numpy()
    prob = pos[anchors] / pos[anchors].sum(1, keepdims=True)
    assert np.all(counts[prob == 0] == 0)
    assert _binomial_ok(counts, prob, calls)


# --------------------------------------------------------------------------- lifted miner


def test_lifted_miner_sets_are_all_positives_and_negatives():
    """Reference: brute-force masks: anchors as for N-pair; positives exactly every same-class
    sample but the anchor, negatives exactly every other-class sample; no randomness (two seeds,
    two calls give the same sets)."""
    anchors, pos, neg = _brute_force(LABELS)
    x, labels = _x(len(LABELS), 8, 1), torch.from_numpy(LABELS)
    first = LiftedMiner(seed=0)(x, labels)
    _check_pairsets_shape(first, len(LABELS))
    assert np.array_equal(first.anchors.numpy(), anchors)
    assert np.array_equal(first.positives.numpy(), pos[anchors])
    assert np.array_equal(first.negatives.numpy(), neg[anchors])
    again = LiftedMiner(seed=3)
    for _ in range(2):
        other = again(x, labels)
        for f in ("anchors", "positives", "negatives"):
            assert torch.equal(getattr(first, f), getattr(other, f))


# --------------------------------------------------------------------------- both set miners and the no-op


@pytest.mark.parametrize("cls", [NPairMiner, LiftedMiner])
def test_set_miners_empty_without_positives_or_negatives(cls):
    """Reference: by definition no anchor exists when the batch is one class (no negative) or all
    singletons (no positive): empty sets, masks of shape (0, B)."""
    x = _x(6, 4, 0)
    for labels in (torch.zeros(6, dtype=torch.long), torch.arange(6)):
        sets = cls(seed=0)(x, labels)
        assert len(sets) == 0
        _check_pairsets_shape(sets, 6)


def _assert_seeded(cls) -> None:
    """Two miners with the same seed give identical tuples over three consecutive batches; a
    third with another seed draws differently at least once."""
    labels = torch.arange(8).repeat_interleave(4)
    m1, m2, m3 = cls(seed=11), cls(seed=11), cls(seed=12)
    differs = False
    for b in range(3):
        x = _x(32, 16, b)
        t1, t2, t3 = m1(x, labels), m2(x, labels), m3(x, labels)
        fields = ("anchors", "positives", "negatives")
        assert all(torch.equal(getattr(t1, f), getattr(t2, f)) for f in fields)
        differs |= not all(torch.equal(getattr(t1, f), getattr(t3, f)) for f in fields)
    assert differs


def test_npair_same_seed_same_tuples():
    """Reference: the miner itself: two instances with the same seed give identical tuples over
    three consecutive batches; another seed gives a different draw."""
    _assert_seeded(NPairMiner)


def test_no_miner_returns_none():
    """Reference: ``miner.name: none``: the loss reads the whole batch, so there are no tuples."""
    assert NoMiner(seed=0)(_x(8, 4, 0), torch.arange(4).repeat(2)) is None
    assert NoMiner()(_x(3, 2, 0), torch.zeros(3, dtype=torch.long)) is None


# --------------------------------------------------------------------------- soft-hard miner

# A line (1-D embeddings), with the hard sets by hand:
#   class 0: x = 0.0 (0), 0.4 (1), 2.0 (2), 2.6 (3)
#   class 1: x = 1.0 (4), 1.5 (5), -3.0 (6), 6.0 (7)
#   class 2: x = 20.0 (8), 20.3 (9)
# anchor 0: positives at d 0.4, 2.0, 2.6; closest negative d 1.0 (sample 4) -> hard positives
#   {2, 3}; farthest positive d 2.6 -> hard negatives (d < 2.6) {4 (1.0), 5 (1.5)}.
# anchor 4: positives at d 0.5, 4.0, 5.0; closest negative d 0.6 (sample 1) -> hard positives
#   {6, 7}; farthest positive d 5.0 -> hard negatives {0 (1.0), 1 (0.6), 2 (1.0), 3 (1.6)}.
# anchor 8: positive at d 0.3, every negative at d >= 14 -> no hard positive, no hard negative:
#   fallback to its positive 9 and a uniform negative among 0..7.
LINE = torch.tensor([[0.0], [0.4], [2.0], [2.6], [1.0], [1.5], [-3.0], [6.0], [20.0], [20.3]])
LINE_LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
LINE_EXPECTED = {  # anchor: (positives it may draw, negatives it may draw)
    0: ({2, 3}, {4, 5}),
    4: ({6, 7}, {0, 1, 2, 3}),
    8: ({9}, set(range(8))),
}


def _hard_sets(d: np.ndarray, labels: np.ndarray, a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Brute force for anchor a: (hard positives, hard negatives, positives, negatives) as masks;
    hard positive: d_ap > min_n d_an; hard negative: d_an < max_p d_ap."""
    pos = (labels == labels[a]) & (np.arange(len(labels)) != a)
    neg = labels != labels[a]
    return pos & (d[a] > d[a, neg].min()), neg & (d[a] < d[a, pos].max()), pos, neg


def test_softhard_hand_built_line():
    """Reference: LINE_EXPECTED, by hand: over 200 seeds every anchor's positive and negative lie
    in its hard sets (or, for anchor 8, its fallback sets), and every member of those sets is
    drawn."""
    seen = {a: (set(), set()) for a in LINE_EXPECTED}
    for seed in range(200):
        t = SoftHardMiner(seed=seed)(LINE, LINE_LABELS)
        assert t.anchors.tolist() == list(range(10))
        for a, p, n in zip(t.anchors.tolist(), t.positives.tolist(), t.negatives.tolist()):
            if a in seen:
                seen[a][0].add(p)
                seen[a][1].add(n)
    assert seen == LINE_EXPECTED


def test_softhard_hard_sets_by_brute_force_on_the_line():
    """Reference: _hard_sets on the exact line distances reproduces LINE_EXPECTED (the rule, as
    the brute-force reference reads it, agrees with the hand derivation)."""
    d = np.abs(LINE.numpy() - LINE.numpy().T).astype(np.float64)
    labels = LINE_LABELS.numpy()
    for a, (want_p, want_n) in LINE_EXPECTED.items():
        hp, hn, pos, neg = _hard_sets(d, labels, a)
        got_p = set(np.flatnonzero(hp)) if hp.any() else set(np.flatnonzero(pos))
        got_n = set(np.flatnonzero(hn)) if hn.any() else set(np.flatnonzero(neg))
        assert (got_p, got_n) == (want_p, want_n)


def test_softhard_matches_bruteforce_rule():
    """Reference: _hard_sets on the miner's own distances, over 20 random batches: a drawn
    positive is a hard positive whenever the anchor has one (else any positive), a drawn negative
    a hard negative whenever it has one (else any negative); the tuples are valid, and both
    branches occur. A hard positive exists exactly when a hard negative does (both say
    max d_ap > min d_an)."""
    labels = np.arange(10).repeat(4)
    hard = fallback = 0
    for seed in range(20):
        x = F.normalize(_x(len(labels), 3, 100 + seed), dim=1)
        # Classes 0-4 tight and far from everything (anchors without hard samples), 5-9 mixed.
        centres = torch.tensor([5.0, 0.0, 0.0]) + torch.arange(5).repeat_interleave(4)[:, None] * torch.tensor([0.0, 3.0, 0.0])
        x[: len(labels) // 2] = 0.3 * x[: len(labels) // 2] + centres
        d = pairwise_distances(x).numpy()
        t = SoftHardMiner(seed=seed)(x, torch.from_numpy(labels))
        assert t.anchors.tolist() == list(range(len(labels)))
        for a, p, n in zip(t.anchors.tolist(), t.positives.tolist(), t.negatives.tolist()):
            hp, hn, pos, neg = _hard_sets(d, labels, a)
            assert pos[p] and neg[n]
            assert hp.any() == hn.any()
            if hp.any():
                hard += 1
                assert hp[p] and hn[n], (seed, a, p, n)
            else:
                fallback += 1
    assert hard > 0 and fallback > 0, (hard, fallback)


def test_softhard_draws_uniform_over_hard_sets():
    """Reference: uniform over the hard sets (or over all positives / negatives where an anchor has
    none), from _hard_sets on the line: 3,000 draws per anchor through the miner's ``mine`` (the
    rows __call__ passes, repeated), every frequency within 5 binomial standard deviations."""
    labels = LINE_LABELS.numpy()
    d = np.abs(LINE.numpy() - LINE.numpy().T).astype(np.float64)
    repeats = 3000
    n = len(labels)
    miner = SoftHardMiner(seed=4)
    pos_mask = torch.from_numpy((labels[:, None] == labels[None]) & ~np.eye(n, dtype=bool))
    neg_mask = torch.from_numpy(labels[:, None] != labels[None])
    anchors = torch.arange(n).repeat(repeats)
    uniform_positives = sample_from_mask(pos_mask[anchors], miner.generator)
    t = miner.mine(LINE, anchors, uniform_positives, pairwise_distances(LINE)[anchors], pos_mask[anchors], neg_mask[anchors])
    assert isinstance(t, Triplets) and torch.equal(t.anchors, anchors)
    p_counts, n_counts = np.zeros((n, n)), np.zeros((n, n))
    np.add.at(p_counts, (t.anchors.numpy(), t.positives.numpy()), 1)
    np.add.at(n_counts, (t.anchors.numpy(), t.negatives.numpy()), 1)
    p_prob, n_prob = np.zeros((n, n)), np.zeros((n, n))
    for a in range(n):
        hp, hn, pos, neg = _hard_sets(d, labels, a)
        p_set, n_set = (hp if hp.any() else pos), (hn if hn.any() else neg)
        p_prob[a] = p_set / p_set.sum()
        n_prob[a] = n_set / n_set.sum()
    for counts, prob in ((p_counts, p_prob), (n_counts, n_prob)):
        assert np.all(counts[prob == 0] == 0)
        assert _binomial_ok(counts, prob, repeats)


def test_softhard_empty_and_same_seed():
    """Reference: no triplet for one class or all singletons; the same seed gives the same
    triplets (two instances, three batches) and another seed a different draw."""
    x = _x(6, 4, 0)
    assert len(SoftHardMiner()(x, torch.zeros(6, dtype=torch.long))) == 0
    assert len(SoftHardMiner()(x, torch.arange(6))) == 0
    _assert_seeded(SoftHardMiner)
