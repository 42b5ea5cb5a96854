"""Batch samplers (dml/samplers): batch composition checked against the labels by brute force,
epoch length against N // batch_size, reproducibility against a second run with the same seed,
class-selection frequencies against the uniform rate (binomial tolerance); the embedded samplers'
selection rules against brute-force loops on hand-made point sets, their distances against scipy
(``wasserstein_distance`` on bin positions, ``linalg.sqrtm``, ``multivariate_normal``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import scipy.linalg
import scipy.stats
import torch
from scipy.spatial.distance import cdist, pdist

from dml.samplers.basic import ClassBalancedSampler, ClassMembers, ClassRandomSampler, FullRandomSampler, RandomSampler
from dml.samplers.config import (
    D2CoresetKnobs,
    DDMKnobs,
    EmbeddedSamplerKnobs,
    FRDKnobs,
    GreedyCoresetKnobs,
    SamplerSection,
)
from dml.samplers.embedded import (
    D2CoresetSampler,
    DDMSampler,
    FRDSampler,
    GreedyCoresetSampler,
    d2_probabilities,
    ddm_costs,
    distance_histograms,
    frechet_distances,
    gaussian_fit,
    gaussian_log_density,
    greedy_k_center,
    squared_distances,
    wasserstein_on_bins,
)
from dml.samplers.registry import EMBEDDED_SAMPLERS, SAMPLERS, build_sampler
from dml.samplers.storage import EmbeddingStorage

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
    """Reference: the SamplerSection fields: name selects the class, its knobs reach it; only the
    embedded samplers get (and require) a storage."""
    assert set(SAMPLERS) == {"random", "class_balanced", "class_random", "full_random", "greedy_coreset", "d2_coreset", "ddm", "frd"}
    cpu = torch.device("cpu")
    s, _ = build_sampler(SamplerSection(name="class_balanced", class_balanced={"samples_per_class": 4}), LABELS, 16, 8, cpu)
    assert isinstance(s, ClassBalancedSampler) and s.samples_per_class == 4 and s.batch_size == 16
    r, _ = build_sampler(SamplerSection(name="random"), LABELS, 16, 8, cpu)
    assert type(r) is RandomSampler and len(r) == 55 // 16
    c, _ = build_sampler(SamplerSection(name="class_random", class_random={"samples_per_class": 4}), LABELS, 16, 8, cpu)
    assert type(c) is ClassRandomSampler and c.samples_per_class == 4
    assert type(build_sampler(SamplerSection(name="full_random"), LABELS, 16, 8, cpu)[0]) is FullRandomSampler
    for name in ("random", "class_balanced", "class_random", "full_random"):
        assert build_sampler(SamplerSection(name=name), LABELS, 16, 8, cpu)[1] is None
    cfg = SamplerSection(name="ddm", ddm={"candidates": 3, "bins": 7, "refresh_every": 2, "update_storage": False})
    d, storage = build_sampler(cfg, LABELS, 16, 8, cpu)
    assert storage.embeddings.shape == (55, 8) and storage.refresh_every == 2 and not storage.update and storage.batch_size == 16
    assert type(d) is DDMSampler and d.knobs.candidates == 3 and d.knobs.bins == 7 and d.storage is storage
    assert {name for name, field in SamplerSection.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, EmbeddedSamplerKnobs)} == set(EMBEDDED_SAMPLERS)


# --- class_random, full_random ---------------------------------------------------------------


@pytest.mark.parametrize("batch_size,n", [(12, 2), (12, 3), (8, 4)])
def test_class_random_batch_composition(batch_size, n):
    """Reference: brute-force label counts: each batch is batch_size / n consecutive groups of n
    images of one class; over many batches a class fills two groups of one batch and an image
    repeats within a group (draws with replacement, as the paper code's class_random)."""
    sampler = ClassRandomSampler(LABELS, batch_size, n)
    assert len(sampler) == len(LABELS) // batch_size
    class_twice = image_twice = False
    for seed in range(40):
        for batch in _batches(sampler, seed):
            assert batch.shape == (batch_size,) and batch.min() >= 0 and batch.max() < len(LABELS)
            groups = LABELS[batch].reshape(-1, n)
            assert (groups == groups[:, :1]).all()
            class_twice |= len(set(groups[:, 0].tolist())) < len(groups)
            image_twice |= any(len(set(g.tolist())) < n for g in batch.reshape(-1, n))
    assert class_twice and image_twice


def test_class_random_draws_classes_uniformly():
    """Reference: classes are drawn uniformly whatever their size (sizes 1..10 here), so each
    class's share of group draws is 1/10 within 5 binomial standard deviations."""
    sampler = ClassRandomSampler(LABELS, 12, 2)
    rng = np.random.default_rng(3)
    counts = Counter()
    for _ in range(500):
        for batch in sampler.epoch(rng):
            counts.update(LABELS[batch[::2]].tolist())
    total = sum(counts.values())
    sigma = np.sqrt(0.1 * 0.9 / total)
    for cls in np.unique(LABELS):
        assert abs(counts[cls] / total - 0.1) <= 5 * sigma, cls


def test_full_random_has_a_positive_pair():
    """Reference: brute force: the last image's class is among the first batch_size - 1 images',
    with a different image (a real positive pair), although one class has a single member."""
    sampler = FullRandomSampler(LABELS, 8)
    assert len(sampler) == 55 // 8
    for seed in range(50):
        for batch in _batches(sampler, seed):
            assert batch.shape == (8,)
            last, rest = batch[-1], batch[:-1]
            partners = rest[LABELS[rest] == LABELS[last]]
            assert len(partners) and (partners != last).any()


def test_class_members_draws():
    """Reference: brute force over the labels: without replacement gives distinct members of the
    class (all of them, then repeats, when the class is smaller), ``first`` leads its row, with
    replacement stays in the class."""
    members = ClassMembers(LABELS)
    rng = np.random.default_rng(0)
    classes = np.arange(10).repeat(3)
    for _ in range(20):
        groups = members.without_replacement(classes, 4, rng)
        for cls, row in zip(classes, groups, strict=True):
            own = set(np.flatnonzero(members.class_of == cls).tolist())
            assert set(row.tolist()) <= own and len(set(row.tolist())) == min(4, len(own))
        first = np.array([rng.choice(np.flatnonzero(members.class_of == c)) for c in classes])
        led = members.without_replacement(classes, 3, rng, first=first)
        assert (led[:, 0] == first).all()
        for cls, row in zip(classes, led, strict=True):
            assert len(set(row.tolist())) == min(3, members.sizes[cls])
        drawn = members.with_replacement(classes, 5, rng)
        assert (members.class_of[drawn] == classes[:, None]).all()


# --- embedded samplers -----------------------------------------------------------------------


def _storage(points: np.ndarray) -> EmbeddingStorage:
    storage = EmbeddingStorage(len(points), points.shape[1], torch.device("cpu"))
    storage.embeddings = torch.as_tensor(points, dtype=torch.float32)
    return storage


def _is_greedy_sequence(points: np.ndarray, picks: list[int]) -> bool:
    d = cdist(points, points, "sqeuclidean")
    for step in range(1, len(picks)):
        to_chosen = d[:, picks[:step]].min(1)
        if not np.isclose(to_chosen[picks[step]], to_chosen.max()):
            return False
    return len(set(picks)) == len(picks)


# Corners of a 10 x 10 square, its centre and two points next to the corner (0, 0).
SQUARE = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5], [1, 0], [0, 1]], dtype=np.float64)


def test_greedy_k_center_hand_made():
    """Reference: by hand: from (1, 0) the farthest point is (10, 10) (d^2 181), then (0, 10)
    (100 to the nearer chosen point, vs 81 for (10, 0)), then (10, 0) (81), then the centre (41)."""
    d = squared_distances(torch.as_tensor(SQUARE), torch.as_tensor(SQUARE))
    assert greedy_k_center(d, 5, start=5).tolist() == [5, 3, 2, 1, 4]


def test_greedy_k_center_is_farthest_point_on_random_points():
    """Reference: scipy cdist brute force: every pick maximises the distance to the nearest
    earlier pick."""
    points = np.random.default_rng(0).normal(size=(60, 5))
    picks = greedy_k_center(squared_distances(torch.as_tensor(points), torch.as_tensor(points)), 12, start=7)
    assert picks[0] == 7 and _is_greedy_sequence(points, picks.tolist())


def test_greedy_coreset_sampler_batches():
    """Reference: brute force: with the pool holding every storage row, each batch's picks (the
    first image of each class group) are a farthest-point sequence over the storage, mapped to
    the right dataset indices, and each comes with n - 1 other images of its class."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), 4)
    points = rng.normal(size=(80, 3)) + 4 * rng.normal(size=(20, 3))[labels]
    knobs = GreedyCoresetKnobs(samples_per_class=2, pool_size=80)
    sampler = GreedyCoresetSampler(labels, 16, _storage(points), knobs)
    batches = _batches(sampler, 0)
    assert len(batches) == 5
    for batch in batches:
        groups = batch.reshape(8, 2)
        assert _is_greedy_sequence(points, groups[:, 0].tolist())
        assert (labels[groups[:, 1]] == labels[groups[:, 0]]).all() and (groups[:, 1] != groups[:, 0]).all()


def test_embedded_sampler_sees_storage_updates_between_batches():
    """Reference: the farthest-point rule: a storage row moved far away after the first batch is
    the second pick of the next batch (the batch is chosen when requested, not at epoch start)."""
    labels = np.repeat(np.arange(20), 4)
    points = np.random.default_rng(2).normal(size=(80, 3))
    storage = _storage(points)
    sampler = GreedyCoresetSampler(labels, 8, storage, GreedyCoresetKnobs(samples_per_class=2, pool_size=80))
    batches = sampler.epoch(np.random.default_rng(0))
    first = next(batches)
    moved = int(np.setdiff1d(np.arange(80), first)[0])
    storage.record(np.array([moved]), torch.tensor([[1e3, 1e3, 1e3]]))
    second = next(batches)
    assert second[2] == moved or second[0] == moved


def test_gaussian_log_density_against_scipy():
    """Reference: np.cov plus the documented jitter (1e-6 of the mean variance) for the fit;
    scipy.stats.multivariate_normal.logpdf with the fitted mean and L L^T for the density."""
    points = torch.as_tensor(np.random.default_rng(3).normal(size=(40, 4)) @ np.diag([1, 2, 0.5, 3]))
    mean, chol = gaussian_fit(points)
    cov = (chol @ chol.T).numpy()
    sample_cov = np.cov(points.numpy().T)
    np.testing.assert_allclose(cov, sample_cov + (1e-6 * np.trace(sample_cov) / 4 + 1e-12) * np.eye(4), rtol=1e-12)
    expected = scipy.stats.multivariate_normal(mean.numpy(), cov).logpdf(points.numpy())
    np.testing.assert_allclose(gaussian_log_density(points, mean, chol).numpy(), expected, rtol=1e-10)


def test_d2_probabilities_follow_the_formula():
    """Reference: the D2-coreset formula with scipy's density: p(x) = N(x; mu, Sigma) *
    (sum of squared distances to the chosen points)^lambda, normalised over the unchosen points."""
    points = np.random.default_rng(4).normal(size=(30, 3))
    mean, chol = gaussian_fit(torch.as_tensor(points))
    density = scipy.stats.multivariate_normal(mean.numpy(), (chol @ chol.T).numpy()).pdf(points)
    chosen = np.zeros(30, dtype=bool)
    chosen[[2, 11, 17]] = True
    sum_sq = cdist(points, points[chosen], "sqeuclidean").sum(1)
    log_density = gaussian_log_density(torch.as_tensor(points), mean, chol)
    for exponent in (0.0, 1.0, 2.5):
        expected = np.where(chosen, 0.0, density * sum_sq**exponent)
        got = d2_probabilities(log_density, torch.as_tensor(sum_sq), torch.as_tensor(chosen), exponent)
        np.testing.assert_allclose(got.numpy(), expected / expected.sum(), rtol=1e-9, atol=1e-15)


def test_d2_coreset_sampler_batches():
    """Reference: brute force: k distinct picks per batch, each with n - 1 other images of its
    class; the same seed gives the same batches (numpy and torch streams both seeded)."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(30), 3)
    points = rng.normal(size=(90, 4))
    sampler = D2CoresetSampler(labels, 12, _storage(points), D2CoresetKnobs(samples_per_class=3, pool_size=50))
    batches = _batches(sampler, 0)
    assert len(batches) == 90 // 12
    for batch in batches:
        groups = batch.reshape(4, 3)
        assert len(set(groups[:, 0].tolist())) == 4
        assert (labels[groups] == labels[groups[:, :1]]).all() and all(len(set(g.tolist())) == 3 for g in groups)
    assert all(np.array_equal(a, b) for a, b in zip(batches, _batches(sampler, 0), strict=True))


def test_distance_histograms_against_numpy():
    """Reference: np.histogram(pdist(x), bins, range=(min, max)) of the reference and of each
    candidate's rows, normalised; centres are the midpoints of numpy's bin edges."""
    x = np.random.default_rng(6).normal(size=(24, 5))
    rows = np.random.default_rng(7).permuted(np.tile(np.arange(24), (3, 1)), axis=1)[:, :8]
    t = torch.as_tensor(x)
    reference, candidates, centres = distance_histograms(squared_distances(t, t), torch.as_tensor(rows), 9)
    d = pdist(x)
    expected, edges = np.histogram(d, bins=9, range=(d.min(), d.max()))
    np.testing.assert_allclose(reference.numpy(), expected / expected.sum(), atol=1e-12)
    np.testing.assert_allclose(centres.numpy(), (edges[:-1] + edges[1:]) / 2, rtol=1e-12)
    for row, got in zip(rows, candidates, strict=True):
        h, _ = np.histogram(pdist(x[row]), bins=9, range=(d.min(), d.max()))
        np.testing.assert_allclose(got.numpy(), h / h.sum(), atol=1e-12)


def test_wasserstein_on_bins_against_scipy():
    """Reference: scipy.stats.wasserstein_distance(u_values=bin positions, v_values=bin positions,
    u_weights=p, v_weights=q), with uneven positions too."""
    rng = np.random.default_rng(8)
    for positions in (np.linspace(0.1, 2.0, 12), np.sort(rng.uniform(0, 3, 12))):
        p, q = rng.random((2, 4, 12))
        p /= p.sum(1, keepdims=True)
        q /= q.sum(1, keepdims=True)
        got = wasserstein_on_bins(torch.as_tensor(p), torch.as_tensor(q), torch.as_tensor(positions))
        expected = [scipy.stats.wasserstein_distance(positions, positions, a, b) for a, b in zip(p, q, strict=True)]
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def _ddm_cost_reference(reference: np.ndarray, rows: np.ndarray, bins: int, weight: float) -> list[float]:
    d = pdist(reference)
    span = (d.min(), d.max())
    h, edges = np.histogram(d, bins=bins, range=span)
    centres = (edges[:-1] + edges[1:]) / 2
    costs = []
    for row in rows:
        c = reference[row]
        hc, _ = np.histogram(pdist(c), bins=bins, range=span)
        w = scipy.stats.wasserstein_distance(centres, centres, h / h.sum(), hc / hc.sum())
        gap = np.linalg.norm(reference.mean(0) - c.mean(0)) + np.linalg.norm(reference.std(0) - c.std(0))
        costs.append(gap + weight * w)
    return costs


def _frechet_reference(a: np.ndarray, b: np.ndarray) -> float:
    cov_a, cov_b = np.cov(a.T), np.cov(b.T)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def test_ddm_costs_against_scipy():
    """Reference: the DDM cost written with numpy and scipy (pdist, np.histogram over the
    reference's range, wasserstein_distance on bin centres, np.std)."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 4))
    rows = np.stack([rng.choice(30, 10, replace=False) for _ in range(5)])
    got = ddm_costs(torch.as_tensor(x), torch.as_tensor(rows), 12, 150.0)
    np.testing.assert_allclose(got.numpy(), _ddm_cost_reference(x, rows, 12, 150.0), rtol=1e-9)


@pytest.mark.parametrize("batch,dim", [(20, 6), (5, 8)])
def test_frechet_distances_against_scipy_sqrtm(batch, dim):
    """Reference: ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrtm(S1 S2) with np.cov and
    scipy.linalg.sqrtm, also for a candidate with fewer rows than dimensions (singular S2)."""
    rng = np.random.default_rng(10)
    reference = rng.normal(size=(40, dim)) * rng.uniform(0.5, 2, dim)
    candidates = rng.normal(size=(4, batch, dim)) + rng.normal(size=(4, 1, dim))
    got = frechet_distances(torch.as_tensor(reference), torch.as_tensor(candidates))
    expected = [_frechet_reference(reference, c) for c in candidates]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_batch_matching_prefers_the_representative_candidate():
    """Reference: by construction: the reference is two equal clusters; the candidate with half
    of each cluster matches its mean, spread and distance distribution, the one-cluster candidates
    do not, so both DDM and FRD give it the smallest cost (and agree with the scipy references)."""
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(size=(20, 3)), rng.normal(size=(20, 3)) + 6])
    rows = np.array([np.r_[0:5, 20:25], np.r_[0:10], np.r_[20:30], np.r_[5:15]])
    ddm = ddm_costs(torch.as_tensor(x), torch.as_tensor(rows), 50, 150.0).numpy()
    frd = frechet_distances(torch.as_tensor(x), torch.as_tensor(x[rows])).numpy()
    assert ddm.argmin() == 0 and frd.argmin() == 0
    assert np.argmin(_ddm_cost_reference(x, rows, 50, 150.0)) == 0
    assert np.argmin([_frechet_reference(x, x[r]) for r in rows]) == 0


@pytest.mark.parametrize("name", ["ddm", "frd"])
def test_batch_match_sampler_yields_the_cheapest_candidate(name):
    """Reference: the scipy cost references over the candidates the sampler drew (its numpy
    stream replayed): the batch is the argmin candidate, made of batch_size / n class groups of
    the reference batch, n distinct images of one class each."""
    rng = np.random.default_rng(12)
    labels = np.repeat(np.arange(40), 5)
    points = rng.normal(size=(200, 4)) + 3 * rng.normal(size=(40, 4))[labels]
    knobs = {"samples_per_class": 2, "pool_size": 40, "candidates": 6}
    sampler = (DDMSampler(labels, 12, _storage(points), DDMKnobs(**knobs, bins=20)) if name == "ddm"
               else FRDSampler(labels, 12, _storage(points), FRDKnobs(**knobs)))
    for seed in range(3):
        replay = np.random.default_rng(seed)
        replay.integers(2**63 - 1)  # the epoch's torch seed
        reference, rows = sampler.draw_candidates(replay)
        emb = points.astype(np.float32).astype(np.float64)[reference]
        costs = (_ddm_cost_reference(emb, rows, 20, 150.0) if name == "ddm"
                 else [_frechet_reference(emb, emb[r]) for r in rows])
        batch = next(sampler.epoch(np.random.default_rng(seed)))
        np.testing.assert_array_equal(batch, reference[rows[np.argmin(costs)]])
        groups = labels[batch].reshape(6, 2)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 6
        assert len(set(batch.tolist())) == 12


# --- storage ---------------------------------------------------------------------------------


def test_storage_record_refresh_and_state():
    """Reference: by hand: record overwrites the batch's rows (an index twice: its last
    embedding), not at all with update=False; refresh_due before epoch 0 and every k epochs;
    refresh replaces every row; state_dict round-trips."""
    storage = EmbeddingStorage(5, 2, torch.device("cpu"), refresh_every=3)
    storage.record(np.array([4, 1, 4]), torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], requires_grad=True))
    storage.catch_up(1)  # what batch 1 sees
    assert storage.embeddings.tolist() == [[0, 0], [2, 2], [0, 0], [0, 0], [3, 3]]
    assert not storage.embeddings.requires_grad
    assert [e for e in range(8) if storage.refresh_due(e)] == [0, 3, 6]
    assert [e for e in range(8) if EmbeddingStorage(5, 2, torch.device("cpu")).refresh_due(e)] == [0]
    frozen = EmbeddingStorage(5, 2, torch.device("cpu"), update=False)
    frozen.record(np.array([0]), torch.ones(1, 2))
    frozen.flush()
    assert frozen.embeddings.abs().sum() == 0
    restored = EmbeddingStorage(5, 2, torch.device("cpu"))
    restored.load_state_dict(storage.state_dict())
    assert torch.equal(restored.embeddings, storage.embeddings)

    fresh = torch.randn(5, 2)
    storage.refresh(fresh)
    assert torch.equal(storage.embeddings, fresh)
    with pytest.raises(ValueError, match="storage holds"):
        storage.refresh(torch.zeros(4, 2))


def test_storage_delay_shows_batch_t_the_updates_before_t_minus_delay():
    """Reference: by hand, delay 2: batches 0-2 see the initial storage, batch 3 sees batch 0's
    update; flush applies everything."""
    storage = EmbeddingStorage(4, 1, torch.device("cpu"), delay=2)
    seen = []
    for step in range(4):
        storage.catch_up(step)
        seen.append(storage.embeddings[:, 0].tolist())
        storage.record(np.array([step]), torch.tensor([[step + 1.0]]))
    assert seen == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    storage.flush()
    assert storage.embeddings[:, 0].tolist() == [1, 2, 3, 4] and storage.recorded == storage.applied == 0
