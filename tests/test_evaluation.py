"""The evaluator (dml/evaluation.py) and the FAISS indexes it searches (dml/indexing.py).

References: pytorch-metric-learning's AccuracyCalculator on the same embeddings, brute-force
numpy rankings scored by per-query loops, the ids an index really returns, scikit-learn NMI and a
loop over all pairs for F1, and hand-computed cases. Data is small (at most 2000 x 16) and many
cases are built to contain exact ties: integer grids, exact duplicates within and across classes,
a singleton class.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from pydantic import ValidationError
from references import pair_f1_loop

from dml.config import parse_params
from dml.errors import ConfigError
from dml.evaluation import evaluate_embeddings
from dml.indexing import build_index, factory_string
from dml.metrics.clustering import kmeans_assign
from dml.retrieval_config import EvalConfig, IndexConfig

RETRIEVAL_KEYS = ("precision_at_1", "r_precision", "map_at_r")

# --------------------------------------------------------------------------- data and references


def _tied(n: int = 300, classes: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer vectors in {0..5}^3 (216 cells for n points: exact ties and exact duplicates across
    classes everywhere), a class-dependent offset so retrieval is better than chance, 40 exact
    duplicates within their class, and one singleton class (label 99, the last item)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.integers(0, 4, (n, 3)) + 2 * (labels[:, None] % 3 == np.arange(3))
    x[n - 41 : n - 1], labels[n - 41 : n - 1] = x[:40], labels[:40]
    labels[-1] = 99
    return x.astype(np.float32), labels


def _clustered(n: int = 2000, dim: int = 16, classes: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised Gaussian blobs: random floats, no exact ties."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.standard_normal((classes, dim))[labels] * 1.5 + rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def _ranking(queries, gallery, metric: str, same_set: bool, descending_ties: bool = False) -> np.ndarray:
    """Every gallery id for every query, best first: float64 scores, stable argsort (ties by gallery
    index, or by descending index when ``descending_ties``), the query removed by index."""
    q, g = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    if metric == "l2":
        score = sum((q[:, None, j] - g[None, :, j]) ** 2 for j in range(q.shape[1]))
    else:
        score = -(q @ g.T)
    if same_set:
        np.fill_diagonal(score, np.inf)
    if descending_ties:
        order = np.argsort(score[:, ::-1], axis=1, kind="stable")
        order = score.shape[1] - 1 - order
    else:
        order = np.argsort(score, axis=1, kind="stable")
    return order[:, :-1] if same_set else order


def _reference(ids, query_labels, gallery_labels, same_set, recall_at=(), map_at=()) -> dict[str, float]:
    """Every retrieval metric by its definition, one query at a time. ``ids``: ranked gallery ids,
    -1 = no neighbour (never a hit, never a label lookup). R = occurrences of the query's label in
    the gallery, minus the query itself when ``same_set``; queries with R = 0 are left out and
    counted."""
    sums = dict.fromkeys([f"recall_at_{k}" for k in recall_at] + list(RETRIEVAL_KEYS) + [f"map_at_{k}" for k in map_at], 0.0)
    scored = without = 0
    for q, row in enumerate(np.asarray(ids)):
        r = int((gallery_labels == query_labels[q]).sum()) - int(same_set)
        if r == 0:
            without += 1
            continue
        scored += 1
        rel = np.zeros(len(row), dtype=bool)
        rel[row >= 0] = gallery_labels[row[row >= 0]] == query_labels[q]
        ap = np.where(rel, np.cumsum(rel) / np.arange(1, len(row) + 1), 0.0)  # P@i at relevant ranks
        for k in recall_at:
            sums[f"recall_at_{k}"] += rel[:k].any()
        sums["precision_at_1"] += rel[0]
        sums["r_precision"] += rel[:r].sum() / r
        sums["map_at_r"] += ap[:r].sum() / r
        for k in map_at:
            sums[f"map_at_{k}"] += ap[:k].sum() / min(r, k)
    out = {key: value / scored for key, value in sums.items()}
    out["num_queries_without_positive"] = without
    return out


def _drop_self(ids: np.ndarray) -> np.ndarray:
    """Row q without gallery id q, or without its last entry when q is not among them."""
    rows = []
    for q, row in enumerate(ids.tolist()):
        row.remove(q) if q in row else row.pop()
        rows.append(row)
    return np.array(rows, dtype=np.int64)


def _assert_metrics_equal(got: dict, expected: dict, keys, tol: float = 1e-12) -> None:
    for key in keys:
        assert got[key] == pytest.approx(expected[key], abs=tol), key


def _pml(include, k="max_bin_count", metric: str = "l2"):
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    knn = FaissKNN(index_init_fn=faiss.IndexFlatIP) if metric == "ip" else None  # None: PML's IndexFlatL2
    return AccuracyCalculator(include=include, k=k, device=torch.device("cpu"), knn_func=knn)


PML_INCLUDE = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI")
PML_KEYS = {"precision_at_1": "precision_at_1", "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r"}


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


# --------------------------------------------------------------------------- pytorch-metric-learning


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_same_set_matches_pytorch_metric_learning(metric):
    """Reference: PML AccuracyCalculator.get_accuracy(x, labels) (k='max_bin_count', FaissKNN with
    IndexFlatL2 / IndexFlatIP, FaissKMeans niter=20 and FAISS's default seed 1234) on the tie-heavy
    integer data (cross-class exact duplicates, within-class duplicates, a singleton class).

    P@1, R-precision and MAP@R agree within 1e-9; the singleton query is left out by both and
    counted in num_queries_without_positive. NMI agrees within 1e-9 as well: kmeans_seed=1234 and
    20 iterations run the identical faiss.Kmeans on the identical float32 input
    (min_points_per_centroid only changes a warning).

    The search width is made equal to PML's (recall_at=(1,), no mAP@K: k = largest R) because
    FAISS's *inner-product* search does not order tied scores by id: which of several tied items
    comes first depends on k. FAISS's L2 search orders ties by id, so for "l2" the default, wider
    config must give the same numbers too."""
    x, labels = _tied()
    ref = _pml(PML_INCLUDE, metric=metric).get_accuracy(x, labels)
    cfg = EvalConfig(recall_at=(1,), map_at=(), kmeans_seed=1234, kmeans_iters=20)
    got = evaluate_embeddings(x, labels, cfg=cfg, metric=metric)
    assert got.neighbours == np.bincount(labels).max() - 1
    for ours, theirs in PML_KEYS.items():
        assert got.metrics[ours] == pytest.approx(ref[theirs], abs=1e-9), ours
    assert got.metrics["nmi"] == pytest.approx(ref["NMI"], abs=1e-9)
    assert got.metrics["num_queries_without_positive"] == 1
    assert got.metrics["num_queries"] == got.metrics["num_gallery"] == len(x)
    assert got.metrics["num_classes"] == len(np.unique(labels))
    assert 0.05 < got.metrics["precision_at_1"] < 0.9  # neither trivial nor hopeless
    if metric == "l2":
        wide = evaluate_embeddings(x, labels, cfg=EvalConfig(kmeans_seed=1234), metric="l2")
        assert wide.neighbours == len(x) - 1  # mAP@1000, capped at the gallery
        _assert_metrics_equal(wide.metrics, got.metrics, [*PML_KEYS, "nmi"])


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_query_gallery_matches_pytorch_metric_learning(metric):
    """Reference: PML get_accuracy(q, ql, g, gl, ref_includes_query=False) on separate query and
    gallery sets of tie-heavy integer data, where two query classes (labels 50, 51) are absent from
    the gallery: PML calls them lone queries and leaves them out, the library counts them in
    num_queries_without_positive. Width as PML's (see the same-set test); NMI clusters the queries
    in both, identically (same faiss.Kmeans, seed 1234)."""
    x, labels = _tied(n=400, seed=1)
    q, ql, g, gl = x[:150], labels[:150].copy(), x[150:], labels[150:]
    ql[:5], ql[5:8] = 50, 51
    ref = _pml(PML_INCLUDE, metric=metric).get_accuracy(q, ql, g, gl, ref_includes_query=False)
    cfg = EvalConfig(recall_at=(1,), map_at=(), kmeans_seed=1234)
    got = evaluate_embeddings(q, ql, g, gl, cfg=cfg, metric=metric).metrics
    for ours, theirs in PML_KEYS.items():
        assert got[ours] == pytest.approx(ref[theirs], abs=1e-9), ours
    assert got["nmi"] == pytest.approx(ref["NMI"], abs=1e-9)
    assert got["num_queries_without_positive"] == 8 + int(np.isin(ql[8:], gl, invert=True).sum())
    assert (got["num_queries"], got["num_gallery"]) == (150, 250)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("same_set", [True, False])
def test_map_at_k_matches_pytorch_metric_learning_when_every_r_within_k(metric, same_set):
    """Reference: PML mean_average_precision with k = K = 60 >= every R (so PML's 1/R is the
    library's 1/min(R, K)), on the tie-heavy integer data; both search exactly K neighbours."""
    x, labels = _tied()
    K = 60
    if same_set:
        assert np.bincount(labels).max() - 1 <= K
        ref = _pml(("mean_average_precision",), k=K, metric=metric).get_accuracy(x, labels)
        got = evaluate_embeddings(x, labels, cfg=EvalConfig(recall_at=(1,), map_at=(K,), clustering=False), metric=metric)
    else:
        q, ql, g, gl = x[:100], labels[:100], x[100:], labels[100:]
        ref = _pml(("mean_average_precision",), k=K, metric=metric).get_accuracy(q, ql, g, gl, ref_includes_query=False)
        got = evaluate_embeddings(q, ql, g, gl, cfg=EvalConfig(recall_at=(1,), map_at=(K,), clustering=False), metric=metric)
    assert got.neighbours == K
    assert got.metrics[f"map_at_{K}"] == pytest.approx(ref["mean_average_precision"], abs=1e-9)


# --------------------------------------------------------------------------- brute force


def test_cross_class_duplicates_match_stable_argsort_reference():
    """Reference: brute-force numpy ranking (float64 L2, query removed by index, ties ordered by
    gallery index via stable argsort) scored query by query (_reference), on the integer data with
    exact duplicates across classes. FAISS's L2 search orders exact ties by id (checked in
    tests/test_metrics.py), and integer coordinates make float32 distances exact, so every metric
    must agree to rounding. The case is sensitive to ties: ordering them by descending index
    changes the reference."""
    x, labels = _tied()
    recall_at, map_at = (1, 2, 4, 8, 32, 64), (5, 30, 1000)
    got = evaluate_embeddings(x, labels, cfg=EvalConfig(recall_at=recall_at, map_at=map_at, clustering=False), metric="l2")
    ranked = _ranking(x, x, "l2", same_set=True)
    expected = _reference(ranked, labels, labels, True, recall_at, map_at)
    _assert_metrics_equal(got.metrics, expected, expected)
    flipped = _reference(_ranking(x, x, "l2", True, descending_ties=True), labels, labels, True, recall_at, map_at)
    assert any(abs(flipped[key] - expected[key]) > 1e-6 for key in expected)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_map_at_k_with_r_above_k_matches_bruteforce(metric):
    """Reference: _reference (per-query loop, mAP@K normalised by min(R, K)) over the brute-force
    ranking, for K = 2, 5, 10 below most R (classes of 20-30). Random float vectors with exact
    duplicates only *within* a class, so tied items share a label and tie order cannot change any
    metric; this holds for inner product too, whose FAISS tie order is not by id."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), rng.integers(20, 31, 6))
    x = (rng.standard_normal((6, 8))[labels] + rng.standard_normal((len(labels), 8))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dup = rng.choice(len(x), 30, replace=False)
    x[dup] = x[np.searchsorted(labels, labels[dup])]  # copy of the first member of its class
    map_at = (2, 5, 10)
    got = evaluate_embeddings(x, labels, cfg=EvalConfig(recall_at=(1, 4), map_at=map_at, clustering=False), metric=metric)
    expected = _reference(_ranking(x, x, metric, True), labels, labels, True, (1, 4), map_at)
    _assert_metrics_equal(got.metrics, expected, expected)
    r = np.bincount(labels) - 1
    assert r.min() > max(map_at)  # every R > K: 1/min(R, K) = 1/K, not 1/R


def test_recall_and_f1_match_bruteforce_on_small_case():
    """Reference: Recall@k from the brute-force ranking (per-query loop) for k = 1..32, including
    k larger than the small classes (2-4 members) and than some queries' R; F1 from a loop over
    all pairs of the k-means clusters (same seed and iterations), F1 = 2TP / (2TP + FP + FN); NMI
    from scikit-learn on the same clusters."""
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(8)
    sizes = [2, 3, 4, 12, 15, 24]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = (rng.standard_normal((len(sizes), 5))[labels] * 1.2 + rng.standard_normal((len(labels), 5))).astype(np.float32)
    recall_at = (1, 2, 3, 4, 8, 16, 32)
    cfg = EvalConfig(recall_at=recall_at, map_at=(), kmeans_seed=5, kmeans_iters=25)
    got = evaluate_embeddings(x, labels, cfg=cfg, metric="l2").metrics
    expected = _reference(_ranking(x, x, "l2", True), labels, labels, True, recall_at)
    _assert_metrics_equal(got, expected, expected)
    assert len({round(got[f"recall_at_{k}"], 9) for k in recall_at}) >= 4  # Recall@k really varies

    clusters = kmeans_assign(x, len(sizes), seed=5, iters=25)
    assert got["f1"] == pytest.approx(pair_f1_loop(labels, clusters), abs=1e-12)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)
    assert 0 < got["f1"] < 1


def test_query_gallery_hand_computed_with_absent_labels():
    """Reference: by hand, on a 1-D gallery 0(a) 1(a) 2(b) 10(c) 11(c) and queries
    0.4(a): a a -> P@1 1, RP 1, MAP@R 1, first hit 1; 10.6(c): c c -> 1, 1, 1, 1;
    5.5(z): z is not in the gallery -> left out, counted without positive;
    0.9(b): a a b (R = 1) -> 0, 0, 0, first hit 3; 1.6(a): b a a (R = 2) -> 0, 1/2, (1/2)(1/2), 2.
    Means over the 4 scored queries: P@1 2/4, RP 2.5/4, MAP@R 2.25/4, R@1 2/4, R@2 3/4, R@4 1."""
    g = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32)
    gl = np.array([0, 0, 1, 2, 2])
    q = np.array([[0.4], [10.6], [5.5], [0.9], [1.6]], dtype=np.float32)
    ql = np.array([0, 2, 25, 1, 0])
    cfg = EvalConfig(recall_at=(1, 2, 4), map_at=(), clustering=False)
    got = evaluate_embeddings(q, ql, g, gl, cfg=cfg, metric="l2").metrics
    expected = {"precision_at_1": 0.5, "r_precision": 0.625, "map_at_r": 0.5625,
                "recall_at_1": 0.5, "recall_at_2": 0.75, "recall_at_4": 1.0}
    _assert_metrics_equal(got, expected, expected)
    assert got["num_queries_without_positive"] == 1
    assert (got["num_queries"], got["num_gallery"], got["num_classes"]) == (5, 5, 4)


# --------------------------------------------------------------------------- invariances


def test_l2_and_ip_agree_on_normalised_embeddings():
    """Reference: on unit vectors ||a - b||^2 = 2 - 2 a.b, so L2 and inner product rank alike and
    every metric (retrieval and clustering) must be identical. FAISS computes both in float32
    (L2 as ||a||^2 + ||b||^2 - 2 a.b, with norms 1 only to ~1e-7), so two items whose scores
    differ by ~1e-7 may swap; the data is chosen (and checked) so that wherever the relevance of
    consecutive items changes in the float64 ranking, their scores differ by more than 1e-6."""
    x, labels = _clustered(n=150, dim=8, classes=6, seed=0)
    xd = x.astype(np.float64)
    scores = xd @ xd.T
    np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1)[:, :-1]
    ranked, rel = np.take_along_axis(scores, order, 1), labels[order] == labels[:, None]
    assert np.abs(np.diff(ranked, axis=1))[rel[:, 1:] != rel[:, :-1]].min() > 1e-6

    cfg = EvalConfig(recall_at=(1, 2, 4, 8), map_at=(10, 1000))
    by_l2 = evaluate_embeddings(x, labels, cfg=cfg, metric="l2").metrics
    by_ip = evaluate_embeddings(x, labels, cfg=cfg, metric="ip").metrics
    assert by_l2.keys() == by_ip.keys()
    _assert_metrics_equal(by_l2, by_ip, by_l2)
    expected = _reference(_ranking(x, x, "ip", True), labels, labels, True, (1, 2, 4, 8), (10, 1000))
    _assert_metrics_equal(by_ip, expected, expected)


@pytest.mark.parametrize("metric,data", [("l2", "tied"), ("ip", "tied"), ("ip", "clustered")])
def test_block_size_invariance(metric, data):
    """Reference: the evaluation in one block (block_size 4096) against blocks of 7 queries, which
    also switches FAISS from its BLAS kernel to its per-query one (under 20 queries): every metric
    equal to rounding of the per-block sums, for the same set and a separate gallery. Holds for the
    tie-heavy integer data too (exact scores in both kernels)."""
    x, labels = _tied() if data == "tied" else _clustered(n=300, dim=8, classes=10, seed=4)
    for args in [(x, labels), (x[:120], labels[:120], x[120:], labels[120:])]:
        results = [
            evaluate_embeddings(*args, cfg=EvalConfig(block_size=b, map_at=(10, 1000), clustering=False), metric=metric).metrics
            for b in (7, 4096)
        ]
        _assert_metrics_equal(results[0], results[1], results[1])


# --------------------------------------------------------------------------- FAISS indexes


ANN_CONFIGS = {
    "ivf": IndexConfig(type="ivf", metric="ip", nlist=32, nprobe=4),
    "hnsw": IndexConfig(type="hnsw", metric="ip", hnsw_m=16),
    # 4-bit codes: 16 centroids per sub-quantiser train in well under a second
    "ivf_pq": IndexConfig(type="ivf", metric="ip", nlist=32, nprobe=4, pq_m=4, pq_nbits=4),
    "hnsw_pq": IndexConfig(type="hnsw", metric="ip", hnsw_m=16, pq_m=4, pq_nbits=4),
    # PQ candidates re-ranked by exact distance (IndexRefineFlat)
    "ivf_pq_refine": IndexConfig(type="ivf", metric="ip", nlist=32, nprobe=4, pq_m=4, pq_nbits=4, refine_factor=8),
    "hnsw_pq_refine": IndexConfig(type="hnsw", metric="ip", hnsw_m=16, pq_m=4, pq_nbits=4, refine_factor=8),
}


@pytest.fixture(scope="module")
def clustered():
    return _clustered()


@pytest.fixture(scope="module")
def exact_top1(clustered):
    """Brute-force first neighbour of every clustered vector: float64 inner products, the query
    itself excluded, ties to the lowest index."""
    x = clustered[0].astype(np.float64)
    scores = x @ x.T
    np.fill_diagonal(scores, -np.inf)
    return scores.argmax(1)


def _agreement_reference(index, x, exact_top1, width: int, sample_size: int) -> float:
    """Fraction of sampled queries whose first neighbour from ``index`` (searched ``width`` wide,
    self removed by index) is the brute-force first neighbour."""
    n = len(x)
    sample = np.sort(np.random.default_rng(0).choice(n, size=min(sample_size, n), replace=False))
    found = index.search(x[sample], width)[1]
    approx = np.array([next(i for i in row if i != q) for q, row in zip(sample, found.tolist())])
    return float(np.mean(approx == exact_top1[sample]))


@pytest.mark.parametrize("name", list(ANN_CONFIGS))
def test_approximate_index_metrics_and_top1_agreement(clustered, exact_top1, name):
    """References: (1) the metrics equal _reference computed from the ids the index itself returns
    (searched k + 1 wide, self dropped by index); (2) index_top1_agreement equals a brute-force
    recomputation on the same sample (sorted default_rng(0).choice), the index searched as wide as
    the evaluation searched it; (3) with search="exact" the metrics equal exact search without an
    index, and the agreement is recomputed from a 2-wide index search."""
    x, labels = clustered
    cfg_index = ANN_CONFIGS[name]
    index = build_index(x, cfg_index)
    assert index.ntotal == len(x) and index.is_trained
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    expected_type = {"ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat,
                     "ivf_pq": faiss.IndexIVFPQFastScan,  # 4-bit codes: FAISS's SIMD fast-scan
                     "hnsw_pq": faiss.IndexHNSWPQ,
                     "ivf_pq_refine": faiss.IndexRefineFlat, "hnsw_pq_refine": faiss.IndexRefineFlat}[name]
    assert isinstance(index, expected_type), factory_string(cfg_index)

    recall_at, sample = (1, 4, 16), 300
    cfg = EvalConfig(recall_at=recall_at, map_at=(20,), clustering=False, agreement_sample=sample)
    got = evaluate_embeddings(x, labels, cfg=cfg, index=index)
    ids = _drop_self(index.search(x, got.neighbours + 1)[1])
    expected = _reference(ids, labels, labels, True, recall_at, (20,))
    _assert_metrics_equal(got.metrics, expected, expected)
    agreement = got.metrics["index_top1_agreement"]
    assert 0.0 <= agreement <= 1.0
    assert agreement == pytest.approx(_agreement_reference(index, x, exact_top1, got.neighbours + 1, sample), abs=1e-12)

    exact_cfg = cfg.model_copy(update={"search": "exact"})
    via_exact = evaluate_embeddings(x, labels, cfg=exact_cfg, index=index).metrics
    without_index = evaluate_embeddings(x, labels, cfg=exact_cfg, metric="ip").metrics
    _assert_metrics_equal(via_exact, without_index, without_index)
    assert via_exact["index_top1_agreement"] == pytest.approx(_agreement_reference(index, x, exact_top1, 2, sample), abs=1e-12)


def test_flat_index_agreement_is_one_and_metrics_exact(clustered):
    """Reference: a flat index *is* exact search: agreement 1.0 and the metrics of index-free exact
    search (same metric, taken from the index: the "l2" index overrides metric="ip")."""
    x, labels = clustered
    x, labels = x[:500], labels[:500]
    index = build_index(x, IndexConfig(type="flat", metric="l2"))
    assert isinstance(index, faiss.IndexFlat) and index.ntotal == 500
    cfg = EvalConfig(clustering=False)
    got = evaluate_embeddings(x, labels, cfg=cfg, index=index, metric="ip").metrics
    assert got["index_top1_agreement"] == 1.0
    exact = evaluate_embeddings(x, labels, cfg=cfg, metric="l2").metrics
    _assert_metrics_equal(got, exact, exact)
    with pytest.raises(ValueError, match="index holds 500 vectors"):
        evaluate_embeddings(x[:400], labels[:400], cfg=cfg, index=index)


@pytest.mark.parametrize("recall_at", [(1, 8, 64), (1, 8, 1500)], ids=["k-within-cell", "k-beyond-cell"])
def test_ivf_missing_neighbours_match_ids_returned(clustered, recall_at):
    """Reference: _reference computed from the ids the IVF index returns with nprobe = 1 and a wide
    search (mAP@1000 or Recall@1500: 1001 or 1501 ids per query from one cell of ~60 vectors, so
    most are -1). A -1 is no
    neighbour: it must never be looked up as gallery_labels[-1] (the reference with that
    wrap-around differs, so the check is sensitive), and Recall@k for k beyond everything returned
    is the fraction of queries with a hit among the ids returned."""
    x, labels = clustered
    labels = labels.copy()
    labels[-1] = labels[0]  # the wrap-around target shares a label with many queries
    index = build_index(x, IndexConfig(type="ivf", nlist=32, nprobe=1))
    cfg = EvalConfig(recall_at=recall_at, map_at=(1000,), clustering=False, agreement_sample=200)
    got = evaluate_embeddings(x, labels, cfg=cfg, index=index)
    assert got.neighbours == min(max(*recall_at, 1000), len(x) - 1)
    ids = _drop_self(index.search(x, got.neighbours + 1)[1])
    assert (ids == -1).mean() > 0.5
    expected = _reference(ids, labels, labels, True, recall_at, (1000,))
    _assert_metrics_equal(got.metrics, expected, expected)
    wrapped = _reference(np.where(ids < 0, len(x) - 1, ids), labels, labels, True, recall_at, (1000,))
    assert abs(wrapped["map_at_1000"] - expected["map_at_1000"]) > 1e-4
    assert got.metrics[f"recall_at_{recall_at[-1]}"] < 1.0


def test_recall_at_k_over_the_whole_gallery_is_an_error(clustered):
    """Reference: the definition: with k >= the searchable gallery (all items but the query),
    every query with a positive retrieves it, so Recall@k is 1 by construction; asking for it is
    a one-line config error naming the key (not a silent 1.0)."""
    x, labels = clustered
    searchable = len(x) - 1
    for k in (searchable, 5000):
        with pytest.raises(ConfigError, match=rf"^eval.recall_at: k={k} reaches the whole gallery \({searchable} searchable items\)"):
            evaluate_embeddings(x, labels, cfg=EvalConfig(recall_at=(1, k), clustering=False))
    assert evaluate_embeddings(x, labels, cfg=EvalConfig(recall_at=(1, searchable - 1), clustering=False)).metrics


def test_hnsw_deterministic_build_is_byte_identical(clustered):
    """Reference: faiss.serialize_index of two builds from the same vectors with
    deterministic=True (graph built on one thread), while FAISS is allowed 2 threads."""
    x, _ = clustered
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        cfg = IndexConfig(type="hnsw", hnsw_m=16, deterministic=True)
        first, second = (faiss.serialize_index(build_index(x, cfg)) for _ in range(2))
        assert faiss.omp_get_max_threads() == 2  # restored after the one-thread build
    finally:
        faiss.omp_set_num_threads(before)
    assert first.dtype == np.uint8 and len(first) > x.nbytes
    np.testing.assert_array_equal(first, second)


# --------------------------------------------------------------------------- configuration errors


def test_index_config_rejects_inconsistent_fields():
    """Reference: the schema's documented cross-field rules: product quantisation needs ivf or
    hnsw; nprobe cannot exceed nlist (both pydantic ValidationErrors naming the key)."""
    with pytest.raises(ValidationError, match=r"index\.pq_m"):
        IndexConfig(type="flat", pq_m=4)
    with pytest.raises(ValidationError, match=r"index\.nprobe: 16 exceeds index\.nlist=8"):
        IndexConfig(type="ivf", nlist=8, nprobe=16)
    IndexConfig(type="ivf", nlist=8, nprobe=8)  # equal is fine
    with pytest.raises(ValidationError, match=r"index\.refine_factor"):
        IndexConfig(type="hnsw", refine_factor=4)


def test_refine_over_every_candidate_is_exact_search(clustered):
    """Reference: exact search. An IVF-PQ index that visits every cell (nprobe = nlist) and
    re-ranks k x refine_factor >= n candidates by exact distance returns the exact neighbours, so
    its metrics equal exact search and its top-1 agrees everywhere; without re-ranking the PQ
    codes alone do not (agreement < 1), which shows the re-ranking is what makes it exact."""
    x, labels = clustered
    x, labels = x[:1000], labels[:1000]
    base = dict(type="ivf", metric="l2", nlist=8, nprobe=8, pq_m=4, pq_nbits=4)
    cfg = EvalConfig(recall_at=(1, 4), map_at=(), clustering=False, agreement_sample=1000)
    refined = evaluate_embeddings(x, labels, cfg=cfg, index=build_index(x, IndexConfig(**base, refine_factor=1000)))
    exact = evaluate_embeddings(x, labels, cfg=cfg, metric="l2").metrics
    assert refined.metrics["index_top1_agreement"] == 1.0
    _assert_metrics_equal(refined.metrics, exact, ("recall_at_1", "recall_at_4", *RETRIEVAL_KEYS))
    codes_only = evaluate_embeddings(x, labels, cfg=cfg, index=build_index(x, IndexConfig(**base)))
    assert codes_only.metrics["index_top1_agreement"] < 1.0


def test_build_index_nlist_above_n_is_one_line_config_error():
    """Reference: k-means cannot make more cells than vectors: nlist 64 for 50 vectors is a
    ConfigError whose one-line message names index.nlist and both numbers."""
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    with pytest.raises(ConfigError) as err:
        build_index(x, IndexConfig(type="ivf", nlist=64, nprobe=8))
    message = str(err.value)
    assert "\n" not in message
    assert "index.nlist" in message and "64" in message and "50" in message


def test_pq_m_not_dividing_embed_dim_fails_parse_params():
    """Reference: PQ splits the embedding into pq_m equal sub-vectors, so pq_m must divide
    model.embed_dim: 4 does not divide 30 -> ConfigError naming index.pq_m on one line; 5 does."""
    raw = {"model": {"embed_dim": 30}, "index": {"type": "ivf", "pq_m": 4}}
    with pytest.raises(ConfigError, match=r"index\.pq_m") as err:
        parse_params(raw)
    assert "\n" not in str(err.value) and "30" in str(err.value)
    assert parse_params({"model": {"embed_dim": 30}, "index": {"type": "ivf", "pq_m": 5}}).index.pq_m == 5
