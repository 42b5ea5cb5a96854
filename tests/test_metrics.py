"""Evaluation metrics (dml/metrics, dml/indexing): kNN search and retrieval scores against
brute-force numpy and pytorch-metric-learning's AccuracyCalculator, NMI and pair F1 against
scikit-learn, the entropy formula and pair loops, spectral decay against the KL formula on known
spectra, embedding density against loops. The evaluator as a whole: tests/test_evaluation.py."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from references import pair_f1_loop

from dml.indexing import exact_searcher, search_neighbours
from dml.metrics.clustering import (
    cluster_and_score,
    clustering_scores,
    kmeans_assign,
    pair_f1,
)
from dml.metrics.embedding_space import (
    embedding_density,
    singular_values,
    spectral_decay,
)
from dml.metrics.retrieval import (
    RetrievalScores,
    neighbours_needed,
    relevant_counts,
    retrieval_scores,
)


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _knn(x: np.ndarray, k: int, metric: str = "ip", block_size: int = 4096) -> np.ndarray:
    """All blocks of ``search_neighbours`` over exact search, self excluded, stacked."""
    blocks = list(search_neighbours(exact_searcher(x, metric), x, k, exclude_self=True, block_size=block_size))
    assert [start for start, _ in blocks] == list(range(0, len(x), block_size))
    return np.concatenate([ids for _, ids in blocks])


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


def _scores(neighbour_labels, labels, recall_at=(1,), map_at=()) -> dict[str, float]:
    """retrieval_scores with the same-set R (class size - 1) of ``labels``."""
    return retrieval_scores(neighbour_labels, labels, relevant_counts(labels, labels, True), recall_at, map_at)


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


# --------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("block_size", [7, 4096])
def test_search_neighbours_excluding_self_matches_bruteforce(metric, block_size):
    """Reference: brute-force numpy neighbours (float64 distances, query removed) on tie-free random
    unit vectors, for which inner product and L2 rank identically; in blocks of 7 queries (FAISS's
    non-BLAS path) and in one block."""
    x = _unit(60, 8, 0)
    for k in (1, 5, 20, 59):
        got = _knn(x, k, metric, block_size)
        np.testing.assert_array_equal(got, _bruteforce_neighbours(x, k))


def test_search_neighbours_beyond_n_minus_1_pads_with_minus_one():
    """Reference: by definition at most N - 1 other samples exist: k = 100 on N = 7 returns the
    6 others, ordered as brute force, then -1 (FAISS's "no neighbour") in the remaining 94 columns."""
    x = _unit(7, 3, 1)
    got = _knn(x, 100)
    assert got.shape == (7, 100)
    np.testing.assert_array_equal(got[:, :6], _bruteforce_neighbours(x, 6))
    assert np.all(got[:, 6:] == -1)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_neighbours_removes_query_by_index_with_duplicates(metric):
    """Reference: brute force with the query removed by index. Sample 0 has 1 exact duplicate (5),
    sample 1 has 4 (6..9, more than k = 2): the duplicates are neighbours at distance 0, the query
    itself never is, and the distance profile equals brute force (tie-order independent)."""
    x = _unit(30, 6, 2)
    x[5] = x[0]
    x[6:10] = x[1]
    k = 2
    got = _knn(x, k, metric, block_size=8)
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


@pytest.mark.parametrize("block_size", [7, 4096])
def test_search_neighbours_l2_orders_exact_ties_by_gallery_index(block_size):
    """Reference: brute-force numpy ranking (float64 squared distances, query removed by index,
    stable argsort, i.e. ties ordered by gallery index) on a 4 x 4 x 4 integer grid with 240 points:
    almost every distance is tied and every point has exact duplicates. Integer coordinates make
    the float32 distances exact, so FAISS's L2 kernels (the non-BLAS one for blocks under 20
    queries, the BLAS one otherwise; the heap for k < 100 and the reservoir for k >= 100) must
    reproduce the stable order exactly. (FAISS's inner-product search does *not* order ties by
    index; see tests/test_evaluation.py.)"""
    x = np.random.default_rng(4).integers(0, 4, size=(240, 3)).astype(np.float32)
    xd = x.astype(np.float64)
    d = ((xd[:, None] - xd[None]) ** 2).sum(2)
    np.fill_diagonal(d, np.inf)
    reference = np.argsort(d, axis=1, kind="stable")
    for k in (1, 3, 50, 150, 239):
        np.testing.assert_array_equal(_knn(x, k, "l2", block_size), reference[:, :k], err_msg=f"k={k}")


# --------------------------------------------------------------------------- Recall@k


def test_recall_at_k_hand_computed():
    """Reference: by hand: first same-class hit at rank 1, 3, none, 2 -> R@1 = 1/4, R@2 = 2/4,
    R@3 = R@4 = 3/4; P@1 = rel_1 = 1/4."""
    labels = np.array([0, 1, 2, 3])
    nl = np.array([[0, 9, 9, 9], [9, 9, 1, 1], [9, 9, 9, 9], [9, 3, 9, 3]])
    got = retrieval_scores(nl, labels, np.array([1, 2, 1, 2]), recall_at=[1, 2, 3, 4])
    assert {k: got[f"recall_at_{k}"] for k in (1, 2, 3, 4)} == {1: 0.25, 2: 0.5, 3: 0.75, 4: 0.75}
    assert got["precision_at_1"] == 0.25


def test_recall_at_k_beyond_list_width_counts_only_found_hits():
    """Reference: by hand: Recall@k is 1 only if a relevant item is among the neighbours found. With
    4 listed neighbours per query (what an approximate index returns when it finds no more), query 2
    has no relevant one, so Recall@8 = Recall@4 = 3/4, not 1; a missing neighbour (valid = False,
    FAISS id -1) is never a hit, even when its placeholder label matches."""
    labels = np.array([0, 1, 2, 3])
    nl = np.array([[0, 9, 9, 9], [9, 9, 1, 1], [9, 9, 9, 9], [9, 3, 9, 3]])
    got = retrieval_scores(nl, labels, np.array([1, 2, 1, 2]), recall_at=[4, 8])
    assert got["recall_at_4"] == 0.75
    assert got["recall_at_8"] == 0.75
    valid = np.ones_like(nl, dtype=bool)
    valid[3, 1:] = False  # query 3's only hits are at missing positions
    got = retrieval_scores(nl, labels, np.array([1, 2, 1, 2]), recall_at=[4], valid=valid)
    assert got["recall_at_4"] == 0.5


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
    relevant = relevant_counts(labels, labels, True)
    nb = _knn(x, neighbours_needed(relevant, ks, (), len(x) - 1), metric)
    got = retrieval_scores(labels[nb], labels, relevant, ks)
    for k in ks:
        assert got[f"recall_at_{k}"] == pytest.approx(_bruteforce_recall(x, labels, k), abs=1e-12), k
    assert 0 < got["recall_at_1"] < got["recall_at_16"] < 1


def test_recall_at_k_with_conflicting_duplicate_labels_within_tie_bounds():
    """Reference: tie-robust brute-force bounds on a coarse grid (many exact distance ties, also
    between different labels): a query certainly hits at k if a same-class sample is strictly
    closer than the k-th distance, and possibly hits if one is at most at the k-th distance;
    the library's Recall@k must lie between the two rates."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, size=(120, 3)).astype(np.float32)
    labels = rng.integers(0, 6, size=120)
    ks = [1, 3, 10]
    relevant = relevant_counts(labels, labels, True)
    nb = _knn(x, neighbours_needed(relevant, ks, (), len(x) - 1), "l2")
    got = retrieval_scores(labels[nb], labels, relevant, ks)
    d = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(120, dtype=bool)
    for k in ks:
        kth = np.sort(d, axis=1)[:, k - 1 : k]
        certain = (same & (d < kth - 1e-9)).any(1).mean()
        possible = (same & (d <= kth + 1e-9)).any(1).mean()
        assert certain - 1e-12 <= got[f"recall_at_{k}"] <= possible + 1e-12, (k, certain, got, possible)
        assert certain < possible  # the case really has label-changing ties


# --------------------------------------------------------------------------- MAP@R, R-precision, mAP@K


def test_relevant_counts_hand_computed():
    """Reference: by hand. Gallery labels 0,0,0,1,1,2: same set -> class size - 1; separate query
    set -> occurrences in the gallery, 0 for labels the gallery lacks (5, -1, 7)."""
    gallery = np.array([0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(relevant_counts(gallery, gallery, True), [2, 2, 2, 1, 1, 0])
    queries = np.array([2, 5, 0, -1, 1, 7])
    np.testing.assert_array_equal(relevant_counts(queries, gallery, False), [1, 0, 3, 0, 2, 0])


def test_map_at_r_and_r_precision_hand_computed():
    """Reference: by hand. Labels 0,0,0,1,1,2 (R = 2,2,2,1,1,0).
    MAP@R: q0: [0, 1] -> rel at 1: P@1 = 1 -> (1)/2 = 0.5; q1: [1, 0] -> rel at 2: P@2 = 1/2 -> 0.25;
    q2: [0, 0] -> (1 + 1)/2 = 1; q3: [1] -> 1; q4: [0] -> 0; q5 (R = 0) left out.
    MAP@R = (0.5 + 0.25 + 1 + 1 + 0) / 5 = 0.55.
    R-precision: (1/2 + 1/2 + 2/2 + 1/1 + 0/1) / 5 = 0.6; P@1 = (1 + 0 + 1 + 1 + 0) / 5 = 0.6."""
    labels = np.array([0, 0, 0, 1, 1, 2])
    nl = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
    got = _scores(nl, labels)
    assert got["map_at_r"] == pytest.approx(0.55, abs=1e-12)
    assert got["r_precision"] == pytest.approx(0.6, abs=1e-12)
    assert got["precision_at_1"] == pytest.approx(0.6, abs=1e-12)
    scores = RetrievalScores((1,))
    scores.add(nl == labels[:, None], relevant_counts(labels, labels, True))
    assert scores.without_positive == 1 and scores.scored == 5
    # beyond position R nothing counts: q3 and q4 have R = 1
    nl2 = nl.copy()
    nl2[4] = [0, 1, 1]
    assert _scores(nl2, labels)["map_at_r"] == pytest.approx(0.55, abs=1e-12)


def test_map_at_k_hand_computed():
    """Reference: by hand, mAP@K = (1/min(R, K)) sum_{i<=K} P@i rel_i. One query, R = 3, hits at
    ranks 1 and 3 of 4: K = 1 -> 1/1; K = 2 -> (1)/2; K = 4 -> (1 + 2/3)/3 = 5/9. A second query
    with R = 1 and its hit at rank 2: K = 1 -> 0, K = 2 -> (1/2)/1, K = 4 -> 1/2."""
    hits = np.array([[1, 0, 1, 0], [0, 1, 0, 0]])
    got = retrieval_scores(hits, np.array([1, 1]), np.array([3, 1]), recall_at=(1,), map_at=(1, 2, 4))
    assert got["map_at_1"] == pytest.approx((1 + 0) / 2, abs=1e-12)
    assert got["map_at_2"] == pytest.approx((0.5 + 0.5) / 2, abs=1e-12)
    assert got["map_at_4"] == pytest.approx((5 / 9 + 0.5) / 2, abs=1e-12)


def test_map_at_r_matches_bruteforce_loop():
    """Reference: _bruteforce_map_at_r (explicit loop over queries and positions) on random data
    with unequal classes, a singleton class and 20 exact duplicates."""
    rng = np.random.default_rng(5)
    x = _unit(150, 6, 5)
    x[130:150] = x[rng.choice(130, 20)]
    labels = np.concatenate([rng.integers(0, 10, size=149), [99]])
    relevant = relevant_counts(labels, labels, True)
    nb = _knn(x, neighbours_needed(relevant, [1], (), len(x) - 1))
    got = _scores(labels[nb], labels)["map_at_r"]
    assert got == pytest.approx(_bruteforce_map_at_r(labels[nb], labels), abs=1e-12)
    assert 0 < got < 1


def test_map_at_r_needs_enough_neighbours():
    """Reference: the definition needs R_max = 2 columns for labels 0,0,0: 1 column is an error."""
    with pytest.raises(ValueError, match="2 neighbours"):
        _scores(np.zeros((3, 1), dtype=int), np.array([0, 0, 0]))


@pytest.mark.parametrize("seed", [0, 1])
def test_map_at_r_and_recall_match_pytorch_metric_learning(seed):
    """Reference: pytorch_metric_learning AccuracyCalculator (mean_average_precision_at_r,
    r_precision, precision_at_1; k='max_bin_count'; query == reference), which, like the library,
    leaves queries of singleton classes out. Random float vectors (no exact ties), not unit length,
    searched with L2 as PML's default IndexFlatL2."""
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(10 + seed)
    n = 200
    x = _unit(n, 16, 10 + seed) * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)  # not unit: L2
    labels = np.concatenate([rng.integers(0, 15, size=n - 2), [100, 101]])  # two singleton classes
    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision", "precision_at_1"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    ref = calc.get_accuracy(x, labels)

    relevant = relevant_counts(labels, labels, True)
    nb = _knn(x, neighbours_needed(relevant, [1], (), n - 1), "l2")
    got = retrieval_scores(labels[nb], labels, relevant, [1])
    assert got["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)
    assert got["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-9)
    assert got["precision_at_1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert got["recall_at_1"] == got["precision_at_1"]


def test_neighbours_needed_hand_computed():
    """Reference: by hand: max(k of Recall@k, K of mAP@K, largest R = largest class size - 1),
    capped at the gallery size (19 others), at least 1."""
    labels = np.array([0] * 5 + [1] * 12 + [2] * 3)
    relevant = relevant_counts(labels, labels, True)
    assert neighbours_needed(relevant, [1, 2, 4, 8], (), 19) == 11
    assert neighbours_needed(relevant, [1, 16], (), 19) == 16
    assert neighbours_needed(relevant, [1], [15], 19) == 15
    assert neighbours_needed(relevant, [1, 2], [1000], 19) == 19
    assert neighbours_needed(np.zeros(4, dtype=int), [1], (), 3) == 1
    assert neighbours_needed(np.array([], dtype=int), [1], (), 0) == 1


# --------------------------------------------------------------------------- NMI, F1


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
    h = lambda q: -(q[q > 0] * np.log(q[q > 0])).sum()
    return float(2 * mi / (h(pa) + h(pb)))


def test_nmi_well_separated_clusters_is_one():
    """Reference: sklearn normalized_mutual_info_score = 1.0 when clusters reproduce the labels:
    5 tight blobs 100 units apart; kmeans_assign gives exactly the label partition, so NMI and
    pair F1 are 1."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8)) * 100
    labels = np.repeat(np.arange(5), 30)
    x = centres[labels] + rng.standard_normal((150, 8))
    clusters = kmeans_assign(x, 5, seed=0)
    assert adjusted_rand_score(labels, clusters) == 1.0
    assert normalized_mutual_info_score(labels, clusters) == pytest.approx(1.0)
    got = cluster_and_score(x, labels, seed=0)
    assert got["nmi"] == pytest.approx(1.0, abs=1e-12)
    assert got["f1"] == pytest.approx(1.0, abs=1e-12)


def test_nmi_overlapping_clusters_matches_sklearn_and_formula():
    """Reference: sklearn normalized_mutual_info_score(labels, kmeans_assign(...)) with the same
    seed and iterations, the contingency-table formula 2I/(H_A + H_B), and the pair loop for F1,
    on overlapping blobs (0 < NMI < 1)."""
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(6), 25)
    x = rng.standard_normal((6, 4))[labels] * 1.5 + rng.standard_normal((150, 4))
    clusters = kmeans_assign(x, 6, seed=3, iters=15)
    assert clusters.shape == (150,) and set(np.unique(clusters)) <= set(range(6))
    got = cluster_and_score(x, labels, seed=3, iters=15)
    assert got == clustering_scores(labels, clusters)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)
    assert got["nmi"] == pytest.approx(_nmi_formula(labels, clusters), abs=1e-9)
    assert got["f1"] == pytest.approx(pair_f1_loop(labels, clusters), abs=1e-12)
    assert 0.1 < got["nmi"] < 0.95 and 0.1 < got["f1"] < 0.95


def test_pair_f1_hand_computed_and_pair_loop():
    """Reference: by hand. Labels a a a b b, clusters 0 0 1 1 1: pairs sharing a cluster
    (0,1) (2,3) (2,4) (3,4); sharing a label (0,1) (0,2) (1,2) (3,4). TP = 2 ((0,1), (3,4)),
    FP = 2, FN = 2 -> F1 = 4 / 8 = 0.5. Then the pair loop on random labellings, including
    all-singleton clusters (TP = 0 -> F1 = 0)."""
    assert pair_f1(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 1])) == pytest.approx(0.5, abs=1e-12)
    assert pair_f1(np.array([0, 0, 1, 1]), np.arange(4)) == 0.0
    rng = np.random.default_rng(7)
    for _ in range(3):
        labels, clusters = rng.integers(0, 5, 40), rng.integers(0, 7, 40)
        assert pair_f1(labels, clusters) == pytest.approx(pair_f1_loop(labels, clusters), abs=1e-12)


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
    out = embedding_density(x, np.array([0, 0, 1, 1]), on_sphere=False)
    assert out["pi_intra"] == pytest.approx(2.0)
    assert out["pi_inter"] == pytest.approx(math.sqrt(2))
    assert out["pi_ratio"] == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("block_size", [3, 2048])
def test_embedding_density_matches_python_loops(block_size):
    """Reference: explicit Python loops over all pairs: per-class mean pairwise distance averaged
    over classes with >= 2 members (the singleton class has no pair), and the mean pairwise
    distance between L2-normalised class means; the same whether distances are computed 3 rows
    at a time (blocks cut through classes and the centre matrix) or all at once."""
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

    out = embedding_density(x, labels, block_size=block_size, on_sphere=False)
    assert out["pi_intra"] == pytest.approx(pi_intra, rel=1e-9)
    assert out["pi_inter"] == pytest.approx(inter, rel=1e-9)
    assert out["pi_ratio"] == pytest.approx(pi_intra / inter, rel=1e-9)


def test_embedding_density_on_the_sphere_is_that_of_the_unit_vectors():
    """Reference: the definition: on_sphere=True equals on_sphere=False applied to the
    L2-normalised rows, is invariant to rescaling each row, and equals the plain computation for
    unit input."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), 5)
    x = rng.standard_normal((30, 8)) + labels[:, None] * 0.5
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    scaled = x * rng.uniform(0.1, 10.0, (30, 1))
    expected = embedding_density(unit, labels, on_sphere=False)
    for got in (embedding_density(x, labels), embedding_density(scaled, labels), embedding_density(unit, labels)):
        assert got == pytest.approx(expected, rel=1e-9)
