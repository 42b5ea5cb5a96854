"""Evaluation metrics (dml/metrics, dml/indexing): retrieval against brute-force numpy and
pytorch-metric-learning's AccuracyCalculator, NMI against scikit-learn and the entropy formula,
spectral decay against the KL formula on known spectra, embedding density against loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dml.indexing import flat_index
from dml.metrics.clustering import kmeans_assign, nmi
from dml.metrics.embedding_space import (
    embedding_density,
    singular_values,
    spectral_decay,
)
from dml.metrics.retrieval import (
    knn_excluding_self,
    map_at_r,
    neighbours_needed,
    recall_at_k,
)


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _bruteforce_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """Full float64 distance matrix, the query removed by index, stable argsort."""
    x = x.astype(np.float64)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _bruteforce_recall(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    nb = _bruteforce_neighbours(x, k)
    return float(np.mean([(labels[nb[i]] == labels[i]).any() for i in range(len(x))]))


def _bruteforce_map_at_r(neighbour_labels: np.ndarray, labels: np.ndarray) -> float:
    """Musgrave et al. (2020), written as a loop: AP@R = (1/R) sum_{i<=R, rel_i} P@i; R = 0 skipped."""
    scores = []
    for q in range(len(labels)):
        r = int((labels == labels[q]).sum()) - 1
        if r == 0:
            continue
        hits, total = 0, 0.0
        for i in range(r):
            if neighbour_labels[q, i] == labels[q]:
                hits += 1
                total += hits / (i + 1)
        scores.append(total / r)
    return float(np.mean(scores))


# --------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_knn_excluding_self_matches_bruteforce(metric):
    """Reference: brute-force numpy neighbours (float64 distances, query removed) on tie-free random
    unit vectors, for which inner product and L2 rank identically."""
    x = _unit(60, 8, 0)
    for k in (1, 5, 20, 59):
        got = knn_excluding_self(flat_index(x, metric), x, k)
        np.testing.assert_array_equal(got, _bruteforce_neighbours(x, k))


def test_knn_excluding_self_k_clipped_to_n_minus_1():
    """Reference: by definition at most N - 1 other samples exist: k = 100 on N = 7 returns the
    6 others, ordered as brute force."""
    x = _unit(7, 3, 1)
    got = knn_excluding_self(flat_index(x), x, 100)
    np.testing.assert_array_equal(got, _bruteforce_neighbours(x, 6))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_knn_excluding_self_removes_query_by_index_with_duplicates(metric):
    """Reference: brute force with the query removed by index. Sample 0 has 1 exact duplicate (5),
    sample 1 has 4 (6..9, more than k = 2): the duplicates are neighbours at distance 0, the query
    itself never is, and the distance profile equals brute force (tie-order independent)."""
    x = _unit(30, 6, 2)
    x[5] = x[0]
    x[6:10] = x[1]
    k = 2
    got = knn_excluding_self(flat_index(x, metric), x, k)
    assert np.all(got != np.arange(30)[:, None])
    assert got[0, 0] == 5 and got[5, 0] == 0
    assert set(got[1].tolist()) <= {6, 7, 8, 9} and len(set(got[1].tolist())) == 2
    for q in range(6, 10):
        assert set(got[q].tolist()) <= {1, 6, 7, 8, 9} - {q}
    xd = x.astype(np.float64)
    d = np.linalg.norm(xd[:, None] - xd[None], axis=2)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :k]
    np.testing.assert_allclose(np.take_along_axis(d, got, axis=1), expected, atol=1e-5)


# --------------------------------------------------------------------------- Recall@k


def test_recall_at_k_hand_computed():
    """Reference: by hand: first same-class hit at rank 1, 3, none, 2 -> R@1 = 1/4, R@2 = 2/4,
    R@3 = R@4 = 3/4."""
    labels = np.array([0, 1, 2, 3])
    nl = np.array([[0, 9, 9, 9], [9, 9, 1, 1], [9, 9, 9, 9], [9, 3, 9, 3]])
    assert recall_at_k(nl, labels, [1, 2, 3, 4]) == {1: 0.25, 2: 0.5, 3: 0.75, 4: 0.75}


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_recall_at_k_matches_bruteforce_with_duplicates(metric):
    """Reference: brute-force numpy Recall@k (full distance matrix, stable argsort, query removed)
    on data where a third of the samples are exact copies of others with the same label (ties
    among copies cannot change the label sequence, so the reference is exact)."""
    rng = np.random.default_rng(3)
    base = _unit(80, 4, 3)
    labels = rng.integers(0, 12, size=80)
    src = rng.choice(80, size=40)
    x = np.concatenate([base, base[src]])
    labels = np.concatenate([labels, labels[src]])
    ks = [1, 2, 4, 8, 16]
    nb = knn_excluding_self(flat_index(x, metric), x, max(ks))
    got = recall_at_k(labels[nb], labels, ks)
    for k in ks:
        assert got[k] == pytest.approx(_bruteforce_recall(x, labels, k), abs=1e-12), k
    assert 0 < got[1] < got[16] < 1


def test_recall_at_k_with_conflicting_duplicate_labels_within_tie_bounds():
    """Reference: tie-robust brute-force bounds on a coarse grid (many exact distance ties, also
    between different labels): a query certainly hits at k if a same-class sample is strictly
    closer than the k-th distance, and possibly hits if one is at most at the k-th distance;
    the library's Recall@k must lie between the two rates."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, size=(120, 3)).astype(np.float32)
    labels = rng.integers(0, 6, size=120)
    ks = [1, 3, 10]
    nb = knn_excluding_self(flat_index(x, "l2"), x, max(ks))
    got = recall_at_k(labels[nb], labels, ks)
    d = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(120, dtype=bool)
    for k in ks:
        kth = np.sort(d, axis=1)[:, k - 1 : k]
        certain = (same & (d < kth - 1e-9)).any(1).mean()
        possible = (same & (d <= kth + 1e-9)).any(1).mean()
        assert certain - 1e-12 <= got[k] <= possible + 1e-12, (k, certain, got[k], possible)
        assert certain < possible  # the case really has label-changing ties


# --------------------------------------------------------------------------- MAP@R


def test_map_at_r_hand_computed():
    """Reference: by hand. Labels 0,0,0,1,1,2 (R = 2,2,2,1,1,0).
    q0: [0, 1]-> rel at 1: P@1 = 1 -> (1)/2 = 0.5; q1: [1, 0] -> rel at 2: P@2 = 1/2 -> 0.25;
    q2: [0, 0] -> (1 + 1)/2 = 1; q3: [1] -> 1; q4: [0] -> 0; q5 (R = 0) skipped.
    MAP@R = (0.5 + 0.25 + 1 + 1 + 0) / 5 = 0.55."""
    labels = np.array([0, 0, 0, 1, 1, 2])
    nl = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert map_at_r(nl, labels) == pytest.approx(0.55, abs=1e-12)
    # beyond position R nothing counts: q3 and q4 have R = 1
    nl2 = nl.copy()
    nl2[4] = [0, 1, 1]
    assert map_at_r(nl2, labels) == pytest.approx(0.55, abs=1e-12)


def test_map_at_r_matches_bruteforce_loop():
    """Reference: _bruteforce_map_at_r (explicit loop over queries and positions) on random data
    with unequal classes, a singleton class and 20 exact duplicates."""
    rng = np.random.default_rng(5)
    x = _unit(150, 6, 5)
    x[130:150] = x[rng.choice(130, 20)]
    labels = np.concatenate([rng.integers(0, 10, size=149), [99]])
    k = neighbours_needed(labels, [1])
    nb = knn_excluding_self(flat_index(x), x, k)
    got = map_at_r(labels[nb], labels)
    assert got == pytest.approx(_bruteforce_map_at_r(labels[nb], labels), abs=1e-12)
    assert 0 < got < 1


def test_map_at_r_needs_enough_neighbours():
    """Reference: the definition needs R_max = 2 columns for labels 0,0,0: 1 column is an error."""
    with pytest.raises(ValueError, match="2 neighbours"):
        map_at_r(np.zeros((3, 1), dtype=int), np.array([0, 0, 0]))


@pytest.mark.parametrize("seed", [0, 1])
def test_map_at_r_and_recall_match_pytorch_metric_learning(seed):
    """Reference: pytorch_metric_learning AccuracyCalculator (mean_average_precision_at_r,
    precision_at_1; k='max_bin_count'; query == reference). PML drops the first hit as the query
    and excludes queries of singleton classes, so the data has no exact ties (random float
    vectors) and precision_at_1 is compared with Recall@1 over non-singleton queries."""
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(10 + seed)
    n = 200
    x = _unit(n, 16, 10 + seed) * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)  # not unit: L2
    labels = np.concatenate([rng.integers(0, 15, size=n - 2), [100, 101]])  # two singleton classes
    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r", "precision_at_1"), k="max_bin_count", device=torch.device("cpu")
    )
    ref = calc.get_accuracy(x, labels)

    k = neighbours_needed(labels, [1])
    nb = knn_excluding_self(flat_index(x, "l2"), x, k)
    not_lone = np.array([(labels == c).sum() > 1 for c in labels])
    assert map_at_r(labels[nb], labels) == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    r1 = recall_at_k(labels[nb][not_lone], labels[not_lone], [1])[1]
    assert r1 == pytest.approx(ref["precision_at_1"], abs=1e-6)


def test_neighbours_needed_hand_computed():
    """Reference: by hand: max(max(ks), largest class size - 1)."""
    labels = np.array([0] * 5 + [1] * 12 + [2] * 3)
    assert neighbours_needed(labels, [1, 2, 4, 8]) == 11
    assert neighbours_needed(labels, [1, 16]) == 16


# --------------------------------------------------------------------------- NMI


def _nmi_formula(a: np.ndarray, b: np.ndarray) -> float:
    """NMI with arithmetic-mean normalisation, from the contingency table: 2 I(A;B) / (H(A) + H(B))."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)
    p = table / table.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum()
    h = lambda q: -(q[q > 0] * np.log(q[q > 0])).sum()  # noqa: E731
    return float(2 * mi / (h(pa) + h(pb)))


def test_nmi_well_separated_clusters_is_one():
    """Reference: sklearn normalized_mutual_info_score = 1.0 when clusters reproduce the labels:
    5 tight blobs 100 units apart; kmeans_assign gives exactly the label partition."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8)) * 100
    labels = np.repeat(np.arange(5), 30)
    x = centres[labels] + rng.standard_normal((150, 8))
    clusters = kmeans_assign(x, 5, seed=0)
    assert adjusted_rand_score(labels, clusters) == 1.0
    assert normalized_mutual_info_score(labels, clusters) == pytest.approx(1.0)
    assert nmi(x, labels, seed=0) == pytest.approx(1.0, abs=1e-12)


def test_nmi_overlapping_clusters_matches_sklearn_and_formula():
    """Reference: sklearn normalized_mutual_info_score(labels, kmeans_assign(...)) with the same
    seed and iterations, and the contingency-table formula 2I/(H_A + H_B), on overlapping blobs
    (0 < NMI < 1)."""
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), 25)
    x = rng.standard_normal((6, 4))[labels] * 1.5 + rng.standard_normal((150, 4))
    clusters = kmeans_assign(x, 6, seed=3, iters=15)
    assert clusters.shape == (150,) and set(np.unique(clusters)) <= set(range(6))
    got = nmi(x, labels, seed=3, iters=15)
    assert got == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)
    assert got == pytest.approx(_nmi_formula(labels, clusters), abs=1e-9)
    assert 0.1 < got < 0.95


def test_kmeans_assign_is_nearest_centroid_partition():
    """Reference: Lloyd's fixed point, by brute force: every point is assigned to the nearest mean
    of its assigned cluster (FAISS's last step is an assignment to the trained centroids, so after
    enough iterations on separated data the partition is stable)."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 20)
    x = (rng.standard_normal((4, 3)) * 4)[labels] + rng.standard_normal((80, 3))
    clusters = kmeans_assign(x, 4, seed=0, iters=50)
    means = np.stack([x[clusters == c].mean(0) for c in range(4)])
    nearest = np.argmin(np.linalg.norm(x[:, None] - means[None], axis=2), axis=1)
    np.testing.assert_array_equal(nearest, clusters)


# --------------------------------------------------------------------------- spectral decay


def _kl_uniform(s: np.ndarray) -> float:
    s = np.asarray(s, dtype=np.float64)
    s = s / s.sum()
    u = 1.0 / len(s)
    return float(sum(u * math.log(u / v) for v in s))


def _with_singular_values(values, n: int, seed: int) -> np.ndarray:
    """U diag(values) V^T with random orthogonal U (n x d) and V (d x d)."""
    rng = np.random.default_rng(seed)
    d = len(values)
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return u @ np.diag(values) @ v.T


def test_singular_values_known_spectrum():
    """Reference: the construction U diag(s) V^T, and sqrt of the eigenvalues of X^T X."""
    x = _with_singular_values([4.0, 3.0, 2.0, 1.0], 10, 0)
    np.testing.assert_allclose(singular_values(x), [4, 3, 2, 1], atol=1e-10)
    y = np.random.default_rng(1).standard_normal((30, 5))
    eig = np.sqrt(np.sort(np.linalg.eigvalsh(y.T @ y))[::-1])
    np.testing.assert_allclose(singular_values(y), eig, rtol=1e-10)


def test_spectral_decay_diag_hand_computed():
    """Reference: by hand for diag(4, 3, 2, 1): s = (0.4, 0.3, 0.2, 0.1),
    KL(U||s) = 1/4 * [ln(0.25/0.4) + ln(0.25/0.3) + ln(0.25/0.2) + ln(0.25/0.1)]."""
    expected = 0.25 * (math.log(0.25 / 0.4) + math.log(0.25 / 0.3) + math.log(0.25 / 0.2) + math.log(0.25 / 0.1))
    assert spectral_decay(np.diag([4.0, 3.0, 2.0, 1.0])) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.1217773, abs=1e-6)  # (-0.4700 - 0.1823 + 0.2231 + 0.9163) / 4
    # rotation invariant, scale invariant, more rows than columns
    x = _with_singular_values([4.0, 3.0, 2.0, 1.0], 12, 5) * 7.0
    assert spectral_decay(x) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("skip,remaining", [(1, [3.0, 2.0, 1.0]), (2, [2.0, 1.0]), (3, [1.0])])
def test_spectral_decay_skip_largest(skip, remaining):
    """Reference: the KL formula over the remaining values, by hand: skip 1 of diag(4,3,2,1) ->
    (1/2, 1/3, 1/6) against 1/3 each; skip 3 leaves one value -> 0."""
    x = _with_singular_values([4.0, 3.0, 2.0, 1.0], 9, 1)
    assert spectral_decay(x, skip_largest=skip) == pytest.approx(_kl_uniform(remaining), abs=1e-10)
    if skip == 1:
        by_hand = (math.log((1 / 3) / (1 / 2)) + math.log(1.0) + math.log((1 / 3) / (1 / 6))) / 3
        assert spectral_decay(x, skip_largest=1) == pytest.approx(by_hand, abs=1e-10)


def test_spectral_decay_uniform_spectrum_is_zero_and_orders_spectra():
    """Reference: KL(U||U) = 0 for equal singular values (3 x orthogonal matrix); a faster-decaying
    spectrum has a larger KL (formula values compared)."""
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((16, 16)))
    assert spectral_decay(3.0 * q) == pytest.approx(0.0, abs=1e-12)
    slow = _with_singular_values([1.0, 0.9, 0.8, 0.7, 0.6], 20, 3)
    fast = _with_singular_values([1.0, 0.3, 0.1, 0.03, 0.01], 20, 3)
    assert spectral_decay(slow) == pytest.approx(_kl_uniform([1.0, 0.9, 0.8, 0.7, 0.6]), abs=1e-10)
    assert spectral_decay(fast) == pytest.approx(_kl_uniform([1.0, 0.3, 0.1, 0.03, 0.01]), abs=1e-10)
    assert spectral_decay(slow) < spectral_decay(fast)


def test_spectral_decay_random_matrix_matches_formula():
    """Reference: KL formula applied to numpy's own singular values of a random 50 x 8 matrix."""
    x = np.random.default_rng(4).standard_normal((50, 8))
    s = np.linalg.svd(x, compute_uv=False)
    for skip in (0, 1, 5):
        assert spectral_decay(x, skip) == pytest.approx(_kl_uniform(s[skip:]), abs=1e-10)


# --------------------------------------------------------------------------- embedding density


def test_embedding_density_hand_computed():
    """Reference: by hand in 2-D: class A (0,0),(2,0) and class B (0,1),(0,3): intra distances 2
    and 2 -> pi_intra 2; centres (1,0),(0,2) normalise to (1,0),(0,1) -> pi_inter sqrt(2);
    ratio sqrt(2)."""
    x = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    out = embedding_density(x, np.array([0, 0, 1, 1]))
    assert out["pi_intra"] == pytest.approx(2.0)
    assert out["pi_inter"] == pytest.approx(math.sqrt(2))
    assert out["pi_ratio"] == pytest.approx(math.sqrt(2))


def test_embedding_density_matches_python_loops():
    """Reference: explicit Python loops over all pairs: per-class mean pairwise distance averaged
    over classes with >= 2 members (the singleton class has no pair), and the mean pairwise
    distance between L2-normalised class means."""
    rng = np.random.default_rng(6)
    labels = np.concatenate([np.repeat([3, 1, 7, 4], [5, 9, 2, 14]), [8]])
    x = rng.standard_normal((len(labels), 5)) + labels[:, None] * 0.3

    intra = []
    centres = []
    for c in sorted(set(labels.tolist())):
        members = [x[i] for i in range(len(x)) if labels[i] == c]
        centres.append(sum(members) / len(members))
        pairs = list(itertools.combinations(members, 2))
        if pairs:
            intra.append(sum(math.dist(a, b) for a, b in pairs) / len(pairs))
    centres = [c / math.sqrt(sum(v * v for v in c)) for c in centres]
    inter_pairs = list(itertools.combinations(centres, 2))
    inter = sum(math.dist(a, b) for a, b in inter_pairs) / len(inter_pairs)
    pi_intra = sum(intra) / len(intra)

    out = embedding_density(x, labels)
    assert out["pi_intra"] == pytest.approx(pi_intra, rel=1e-9)
    assert out["pi_inter"] == pytest.approx(inter, rel=1e-9)
    assert out["pi_ratio"] == pytest.approx(pi_intra / inter, rel=1e-9)
