"""Batch miners (dml/miners): triplet validity against brute-force masks, distance weights against
a float64 numpy implementation of 1/q(d), empirical draw frequencies against the normalised
weights (binomial tolerances), and rho-regularisation against its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dml.miners.config import MinerSection
from dml.miners.registry import MINERS, build_miner
from dml.miners.distance import (
    DistanceWeightedMiner,
    RhoDistanceMiner,
    inverse_sphere_density_weights,
)
from dml.miners.sets import LiftedMiner, NoMiner, NPairMiner
from dml.miners.simple import RandomMiner, SemiHardMiner, SoftHardMiner
from dml.tuples import Triplets, pairwise_distances, sample_from_mask

LOWER, UPPER = 0.5, 1.4


def _unit(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=1)


def _as_np(t: Triplets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return t.anchors.numpy(), t.positives.numpy(), t.negatives.numpy()


def _np_weights(dist: np.ndarray, neg_mask: np.ndarray, dim: int, lower: float, upper: float) -> np.ndarray:
    """The paper's weights, written independently in float64: w ~ 1/q(d) with
    log q(d) = (n-2) log d + ((n-3)/2) log(1 - d^2/4), d clipped below at ``lower``, zero at
    d >= ``upper``; a row without any candidate is uniform over its negatives. Rows sum to 1."""
    dist = dist.astype(np.float64)
    out = np.zeros_like(dist)
    for i in range(dist.shape[0]):
        allowed = neg_mask[i] & (dist[i] < upper)
        if not allowed.any():
            out[i, neg_mask[i]] = 1.0 / neg_mask[i].sum()
            continue
        d = np.maximum(dist[i, allowed], lower)
        log_q = (dim - 2) * np.log(d) + ((dim - 3) / 2) * np.log(1 - d**2 / 4)
        w = np.exp(-(log_q - log_q.min()))
        out[i, allowed] = w / w.sum()
    return out


def _normalise(w: torch.Tensor) -> np.ndarray:
    w = w.double().numpy()
    return w / w.sum(1, keepdims=True)


def _mine_repeated(miner, x: torch.Tensor, labels: torch.Tensor, repeats: int) -> Triplets:
    """``repeats`` independent draws for every anchor in one call of the miner's own ``mine``:
    the rows __call__ would pass (anchors with a positive and a negative, a uniform positive via
    sample_from_mask, the anchors' distance rows and masks), each repeated ``repeats`` times.
    (One vectorised draw instead of thousands of __call__s keeps the frequency tests fast.)"""
    same = labels[:, None] == labels[None, :]
    pos_mask = same & ~torch.eye(len(labels), dtype=torch.bool)
    neg_mask = ~same
    anchors = (pos_mask.any(1) & neg_mask.any(1)).nonzero().squeeze(1).repeat(repeats)
    positives = sample_from_mask(pos_mask[anchors], miner.generator)
    return miner.mine(x, anchors, positives, pairwise_distances(x)[anchors], pos_mask[anchors], neg_mask[anchors])


# --------------------------------------------------------------------------- base helpers


def test_pairwise_distances_match_numpy():
    """Reference: brute-force numpy ||x_i - x_j|| in float64 (off the diagonal: the expansion
    |x|^2 + |y|^2 - 2xy leaves sqrt(float32 rounding) ~ 1e-3 on the diagonal, which no miner uses)."""
    x = torch.randn(17, 5, generator=torch.Generator().manual_seed(0))
    ref = np.linalg.norm(x.numpy()[:, None].astype(np.float64) - x.numpy()[None].astype(np.float64), axis=2)
    got = pairwise_distances(x).numpy()
    off = ~np.eye(17, dtype=bool)
    np.testing.assert_allclose(got[off], ref[off], rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(np.diag(got)) < 1e-2)


def test_sample_from_mask_uniform_over_true_entries():
    """Reference: uniform distribution over each row's True entries; 20,000 draws per row, every
    frequency within 5 binomial standard deviations, False entries never drawn."""
    mask = torch.tensor([[True, False, True, True, False], [False, True, False, False, False], [True] * 5])
    g = torch.Generator().manual_seed(0)
    n = 20_000
    counts = np.zeros(mask.shape)
    big = mask.repeat(n, 1)
    cols = sample_from_mask(big, g).numpy().reshape(n, 3)
    for row in range(3):
        counts[row] = np.bincount(cols[:, row], minlength=5)
    freq = counts / n
    p = mask.numpy() / mask.numpy().sum(1, keepdims=True)
    assert np.all(freq[~mask.numpy()] == 0)
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12)


# --------------------------------------------------------------------------- random miner


def _check_valid(triplets: Triplets, labels: np.ndarray) -> None:
    a, p, n = _as_np(triplets)
    assert np.all(labels[a] == labels[p]) and np.all(a != p), "positive must be same class, not the anchor"
    assert np.all(labels[a] != labels[n]), "negative must be another class"


def test_random_miner_valid_triplets_and_skipped_anchors():
    """Reference: brute-force masks: anchors are exactly the samples with >= 1 same-class partner
    and >= 1 other-class sample (singleton class 9 is skipped), positives same class and not self,
    negatives of another class."""
    labels = np.array([0, 0, 0, 1, 1, 9, 2, 2, 3, 3, 3, 3])
    x = _unit(len(labels), 8, 0)
    t = RandomMiner(seed=0)(x, torch.from_numpy(labels))
    expected_anchors = [i for i in range(len(labels)) if (labels == labels[i]).sum() > 1]
    assert t.anchors.tolist() == expected_anchors
    _check_valid(t, labels)


def test_miners_return_empty_without_negatives_or_positives():
    """Reference: by definition no triplet exists when the batch has one class, or only singletons."""
    x = _unit(6, 4, 0)
    for miner in (RandomMiner(), SemiHardMiner(), DistanceWeightedMiner(), RhoDistanceMiner(p=0.5)):
        assert len(miner(x, torch.zeros(6, dtype=torch.long))) == 0
        assert len(miner(x, torch.arange(6))) == 0


def test_random_miner_positive_and_negative_frequencies_uniform():
    """Reference: uniform over the valid positives and over the other-class samples; 3,000 draws,
    every frequency within 5 binomial standard deviations."""
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    x = _unit(len(labels), 4, 1)
    miner = RandomMiner(seed=5)
    calls = 3000
    pos_counts = np.zeros((9, 9))
    neg_counts = np.zeros((9, 9))
    a, p, n = _as_np(_mine_repeated(miner, x, torch.from_numpy(labels), calls))
    np.add.at(pos_counts, (a, p), 1)
    np.add.at(neg_counts, (a, n), 1)
    same = labels[:, None] == labels[None, :]
    p_pos = (same & ~np.eye(9, dtype=bool)) / (same.sum(1, keepdims=True) - 1)
    p_neg = ~same / (~same).sum(1, keepdims=True)
    for counts, prob in ((pos_counts, p_pos), (neg_counts, p_neg)):
        freq = counts / calls
        sigma = np.sqrt(prob * (1 - prob) / calls)
        assert np.all(np.abs(freq - prob) <= 5 * sigma + 1e-12)


@pytest.mark.parametrize("cls", [RandomMiner, SemiHardMiner, DistanceWeightedMiner, RhoDistanceMiner])
def test_same_seed_same_triplets(cls):
    """Reference: the miner itself with the same seed (two instances, three consecutive batches)
    gives identical triplets; another seed gives a different draw."""
    labels = torch.arange(8).repeat_interleave(4)
    batches = [_unit(32, 16, s) for s in range(3)]
    m1, m2, m3 = cls(seed=11), cls(seed=11), cls(seed=12)
    differs = False
    for x in batches:
        t1, t2, t3 = m1(x, labels), m2(x, labels), m3(x, labels)
        for f in ("anchors", "positives", "negatives"):
            assert torch.equal(getattr(t1, f), getattr(t2, f))
        differs |= not (torch.equal(t1.positives, t3.positives) and torch.equal(t1.negatives, t3.negatives))
    assert differs


# --------------------------------------------------------------------------- semi-hard miner


def test_semihard_hand_built_line():
    """Reference: by hand on a line. Anchor 0 (x=0) has one positive (x=0.5, d_ap 0.5); negatives at
    d 0.3, 0.6, 0.65, 0.9 -> semi-hard set (margin 0.2) = {3, 4}, both drawn over many seeds.
    Anchor 1 (x=0.5, d_ap 0.5) has negatives at d 0.2, 0.1, 1.15, 0.4: none semi-hard -> a random
    negative, every one of them drawn."""
    x = torch.tensor([[0.0], [0.5], [0.3], [0.6], [-0.65], [0.9]])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    seen0, seen1 = set(), set()
    for seed in range(200):
        t = SemiHardMiner(margin=0.2, seed=seed)(x, labels)
        a, p, n = _as_np(t)
        assert p[0] == 1 and p[1] == 0
        seen0.add(int(n[0]))
        seen1.add(int(n[1]))
    assert seen0 == {3, 4}
    assert seen1 == {2, 3, 4, 5}


@pytest.mark.parametrize("margin", [0.05, 0.2, 0.5])
def test_semihard_matches_bruteforce_condition(margin):
    """Reference: brute-force numpy over every mined triplet: if some negative satisfies
    d_ap < d_an < d_ap + margin for the drawn positive, the drawn negative satisfies it; otherwise
    it is any other-class sample."""
    labels = np.arange(10).repeat(4)
    n_fallback = n_semihard = 0
    for seed in range(20):
        x = _unit(len(labels), 8, 100 + seed)
        d = pairwise_distances(x).numpy()  # the miner's own distances (checked against numpy above)
        t = SemiHardMiner(margin, seed=seed)(x, torch.from_numpy(labels))
        _check_valid(t, labels)
        for a, p, n in zip(*_as_np(t)):
            neg = labels != labels[a]
            cand = neg & (d[a] > d[a, p]) & (d[a] < d[a, p] + margin)
            if cand.any():
                n_semihard += 1
                assert cand[n], (a, p, n)
            else:
                n_fallback += 1
    assert n_semihard > 0 and (margin > 0.4 or n_fallback > 0)


# --------------------------------------------------------------------------- distance weights


def test_inverse_sphere_density_weights_match_numpy_formula():
    """Reference: _np_weights, a float64 numpy implementation of 1/q(d) normalised over the
    negatives; data in 16-D with near-duplicates (d < lower cutoff, clipped) and distances beyond
    the upper cutoff (weight 0)."""
    dim = 16
    x = _unit(30, dim, 3)
    x[1] = F.normalize(x[0] + 0.05 * x[2], dim=0)  # a close pair (d well below 0.5)
    x[7] = F.normalize(x[6] + 0.1 * x[8], dim=0)
    labels = torch.arange(30) % 5
    dist = pairwise_distances(x)
    neg = (labels[:, None] != labels[None, :])
    w = inverse_sphere_density_weights(dist, neg, dim, LOWER, UPPER)
    ref = _np_weights(dist.numpy(), neg.numpy(), dim, LOWER, UPPER)
    d = dist.numpy()
    assert (d[neg.numpy()] < LOWER).any() and (d[neg.numpy()] >= UPPER).any()
    assert np.all(w.numpy()[~neg.numpy()] == 0)
    np.testing.assert_allclose(_normalise(w), ref, rtol=2e-4, atol=1e-9)


def test_inverse_sphere_density_weights_hand_values():
    """Reference: by hand in dim 5: log q(d) = 3 log d + log(1 - d^2/4), so
    1/q(0.5) = 1/(0.125 * 0.9375), 1/q(1.0) = 1/0.75 (d = 0.2 is clipped to 0.5, d = 1.5 is past
    the cutoff): normalised weights of [0.2, 0.5, 1.0, 1.5] = [a, a, b, 0] / (2a + b)."""
    dist = torch.tensor([[0.2, 0.5, 1.0, 1.5]])
    neg = torch.ones_like(dist, dtype=torch.bool)
    w = _normalise(inverse_sphere_density_weights(dist, neg, 5, LOWER, UPPER))
    a, b = 1 / (0.125 * 0.9375), 1 / 0.75
    np.testing.assert_allclose(w[0], np.array([a, a, b, 0]) / (2 * a + b), rtol=1e-5)


def test_inverse_sphere_density_weights_uniform_fallback():
    """Reference: the documented rule: a row whose negatives are all at d >= upper cutoff falls
    back to uniform over its negatives (non-negatives stay 0)."""
    dist = torch.tensor([[0.0, 1.5, 1.6, 1.45], [0.2, 0.0, 1.5, 0.9]])
    neg = torch.tensor([[False, True, True, True], [False, False, True, True]])
    w = _normalise(inverse_sphere_density_weights(dist, neg, 8, LOWER, UPPER))
    np.testing.assert_allclose(w[0], [0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(w[1], [0, 0, 0, 1])


@pytest.mark.parametrize("dim", [128, 512])
def test_far_negative_near_antipode_does_not_take_the_weight(dim):
    """Reference: the rule "negatives at d >= upper cutoff get weight 0" and _np_weights. A
    negative at d = 1.999 (past the cutoff) has a huge 1/q(d); the only admissible negative
    (d = 1.0) must still get all the weight, not a uniform share."""
    dist = torch.tensor([[0.0, 1.0, 1.999]])
    neg = torch.tensor([[False, True, True]])
    w = _normalise(inverse_sphere_density_weights(dist, neg, dim, LOWER, UPPER))
    ref = _np_weights(dist.numpy(), neg.numpy(), dim, LOWER, UPPER)
    np.testing.assert_allclose(ref[0], [0, 1, 0])
    np.testing.assert_allclose(w, ref, atol=1e-6)


def test_inverse_sphere_density_weights_finite_with_zero_lower_cutoff():
    """Reference: a sampling distribution must be finite and non-negative with positive mass.
    miner.lower_cutoff = 0.0 is a valid config value (ge=0); with it, a negative at d = 0 (an exact
    duplicate from another class) must not turn the row into NaN (torch.multinomial then fails)."""
    dist = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.8]])
    neg = torch.tensor([[False, True, True], [True, False, True]])
    w = inverse_sphere_density_weights(dist, neg, 128, 0.0, UPPER)
    assert torch.isfinite(w).all(), w
    assert (w >= 0).all() and (w.sum(1) > 0).all() and (w[~neg] == 0).all()


def test_distance_miner_ignores_antipodal_negative_in_128d():
    """Reference: the upper-cutoff rule, by hand: in 128-D, anchor 0 has one admissible negative
    (sample 2, d = 1.0) and one antipodal negative (sample 3, d = 2.0 >= 1.4, weight 0), so
    sample 2 must be drawn every time (30 calls)."""
    dim = 128
    e = torch.eye(dim)
    x = torch.stack([e[0], F.normalize(e[0] + 0.3 * e[1], dim=0), 0.5 * e[0] + 0.75**0.5 * e[2], -e[0]])
    labels = torch.tensor([0, 0, 1, 1])
    d = pairwise_distances(x)
    assert d[0, 2].item() == pytest.approx(1.0, abs=1e-5) and d[0, 3].item() == pytest.approx(2.0, abs=1e-5)
    miner = DistanceWeightedMiner(LOWER, UPPER, seed=0)
    drawn = [int(miner(x, labels).negatives[0]) for _ in range(30)]
    assert drawn.count(3) == 0, f"antipodal negative drawn {drawn.count(3)} / 30 times"


def test_distance_miner_never_draws_beyond_upper_cutoff():
    """Reference: brute-force distances: every drawn negative is at d < upper cutoff whenever the
    anchor has such a negative; anchors with none draw among their negatives (all of them seen)."""
    dim = 16
    labels = np.arange(8).repeat(4)
    miner = DistanceWeightedMiner(LOWER, UPPER, seed=0)
    for seed in range(10):
        x = _unit(len(labels), dim, 200 + seed)
        d = pairwise_distances(x).numpy()
        for a, _, n in zip(*_as_np(miner(x, torch.from_numpy(labels)))):
            neg = labels != labels[a]
            assert neg[n]
            if (neg & (d[a] < UPPER)).any():
                assert d[a, n] < UPPER
    # An anchor whose negatives are all far: draws are uniform over them.
    x = torch.tensor([[1.0, 0.0], [0.99, 0.141], [-1.0, 0.0], [-0.99, 0.141], [-0.99, -0.141]])
    x = F.normalize(x, dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1])
    seen = set()
    for _ in range(30):
        t = miner(x, labels)
        seen.add(int(t.negatives[0]))
    assert seen == {2, 3, 4}


def test_distance_miner_draw_frequencies_match_weights():
    """Reference: the normalised numpy weights _np_weights in 4-D (mild weights, so every
    admissible negative has a sizeable probability). 4,000 draws per anchor; every empirical
    frequency lies within 5 binomial standard deviations sqrt(p(1-p)/N) (+1e-3 slack), and
    weight-0 negatives are never drawn."""
    dim = 4
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    x = _unit(len(labels), dim, 7)
    miner = DistanceWeightedMiner(LOWER, UPPER, seed=1)
    calls = 4000
    counts = np.zeros((len(labels), len(labels)))
    lt = torch.from_numpy(labels)
    for _ in range(20):  # a few real __call__s: same distribution, validity only
        _check_valid(miner(x, lt), labels)
    a, _, n = _as_np(_mine_repeated(miner, x, lt, calls))
    np.add.at(counts, (a, n), 1)
    neg = labels[:, None] != labels[None, :]
    ref = _np_weights(pairwise_distances(x).numpy(), neg, dim, LOWER, UPPER)
    assert (ref[neg] == 0).any() and (ref[neg] > 0.05).sum() > 20
    freq = counts / calls
    assert np.all(freq[ref == 0] == 0)
    sigma = np.sqrt(ref * (1 - ref) / calls)
    assert np.all(np.abs(freq - ref) <= 5 * sigma + 1e-3)


# --------------------------------------------------------------------------- rho-distance miner


def test_rho_p1_all_regularising_triplets():
    """Reference: the definition with p = 1: every triplet is (anchor, anchor, same-class sample
    other than the anchor), the same-class sample uniform over the class (3,000 draws, 5 sigma)."""
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 5])
    x = _unit(len(labels), 8, 4)
    miner = RhoDistanceMiner(p=1.0, seed=0)
    lt = torch.from_numpy(labels)
    valid_anchors = [i for i in range(len(labels)) if labels[i] != 5]
    for _ in range(20):
        a, p, n = _as_np(miner(x, lt))
        assert a.tolist() == valid_anchors
        assert np.array_equal(p, a)
        assert np.all(labels[n] == labels[a]) and np.all(n != a)
    calls = 3000
    a, p, n = _as_np(_mine_repeated(miner, x, lt, calls))
    assert np.array_equal(p, a) and np.all(labels[n] == labels[a]) and np.all(n != a)
    counts = np.zeros((len(labels), len(labels)))
    np.add.at(counts, (a, n), 1)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    prob = same / np.maximum(same.sum(1, keepdims=True), 1)
    prob[-1] = 0
    freq = counts / calls
    sigma = np.sqrt(prob * (1 - prob) / calls)
    assert np.all(np.abs(freq - prob) <= 5 * sigma + 1e-12)


def test_rho_p0_equals_distance_miner_first_batch():
    """Reference: DistanceWeightedMiner with the same seed and cutoffs (one batch)."""
    labels = torch.arange(8).repeat_interleave(4)
    x = _unit(32, 16, 0)
    t_rho = RhoDistanceMiner(p=0.0, seed=3)(x, labels)
    t_dist = DistanceWeightedMiner(seed=3)(x, labels)
    for f in ("anchors", "positives", "negatives"):
        assert torch.equal(getattr(t_rho, f), getattr(t_dist, f))


def test_rho_p0_equals_distance_miner_over_consecutive_batches():
    """Reference: DistanceWeightedMiner with the same seed. A miner lives for a whole epoch (it is
    reseeded once per epoch in training.py), so p = 0 must reproduce the distance miner on every
    batch of the epoch, not only the first."""
    labels = torch.arange(8).repeat_interleave(4)
    rho, dist = RhoDistanceMiner(p=0.0, seed=3), DistanceWeightedMiner(seed=3)
    for b in range(4):
        x = _unit(32, 16, b)
        t_rho, t_dist = rho(x, labels), dist(x, labels)
        for f in ("anchors", "positives", "negatives"):
            assert torch.equal(getattr(t_rho, f), getattr(t_dist, f)), f"batch {b}: {f} differ"


def test_rho_flip_rate_matches_p():
    """Reference: one Bernoulli(p) draw per anchor: over ~410 x 32 anchor draws the fraction of
    regularising triplets (positive == anchor) is within 5 sigma of p = 0.35; the other triplets
    are ordinary (same-class positive != anchor, other-class negative)."""
    labels_t = torch.arange(8).repeat_interleave(4)
    labels = labels_t.numpy()
    miner = RhoDistanceMiner(p=0.35, seed=0)
    x = _unit(32, 16, 9)
    flips = total = 0
    for t in [miner(x, labels_t) for _ in range(10)] + [_mine_repeated(miner, x, labels_t, 400)]:
        a, p, n = _as_np(t)
        flip = p == a
        assert np.all(labels[n[flip]] == labels[a[flip]]) and np.all(n[flip] != a[flip])
        assert np.all(labels[p[~flip]] == labels[a[~flip]]) and np.all(labels[n[~flip]] != labels[a[~flip]])
        flips += int(flip.sum())
        total += len(a)
    assert abs(flips / total - 0.35) <= 5 * np.sqrt(0.35 * 0.65 / total)


# --------------------------------------------------------------------------- registry


def test_build_miner_passes_config_values():
    """Reference: each miner's own knobs (MinerSection.<name>) reach it unchanged."""
    assert set(MINERS) == {"random", "semihard", "softhard", "distance", "rho_distance", "npair", "lifted", "none"}
    cfg = MinerSection(
        name="rho_distance",
        distance={"lower_cutoff": 0.4, "upper_cutoff": 1.3},
        rho_distance={"p": 0.15, "lower_cutoff": 0.4, "upper_cutoff": 1.3},
        semihard={"margin": 0.1},
    )
    m = build_miner(cfg, seed=0)
    assert isinstance(m, RhoDistanceMiner) and (m.p, m.lower_cutoff, m.upper_cutoff) == (0.15, 0.4, 1.3)
    d = build_miner(cfg.model_copy(update={"name": "distance"}), seed=0)
    assert type(d) is DistanceWeightedMiner and (d.lower_cutoff, d.upper_cutoff) == (0.4, 1.3)
    s = build_miner(cfg.model_copy(update={"name": "semihard"}), seed=0)
    assert isinstance(s, SemiHardMiner) and s.margin == 0.1
    assert type(build_miner(cfg.model_copy(update={"name": "random"}), seed=0)) is RandomMiner
    expected = {"softhard": SoftHardMiner, "npair": NPairMiner, "lifted": LiftedMiner, "none": NoMiner}
    for name, cls in expected.items():
        assert type(build_miner(cfg.model_copy(update={"name": name}), seed=0)) is cls
    # the seed argument seeds the miner's generator
    x, labels = _unit(16, 8, 0), torch.arange(4).repeat_interleave(4)
    a = build_miner(cfg, seed=4)(x, labels)
    b = RhoDistanceMiner(0.15, 0.4, 1.3, seed=4)(x, labels)
    assert torch.equal(a.negatives, b.negatives) and torch.equal(a.positives, b.positives)
