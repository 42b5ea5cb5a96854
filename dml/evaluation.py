"""The evaluator: every retrieval and clustering metric from shared work done once.

One kNN search, as wide as the most demanding metric needs (Recall@k, R-precision, MAP@R,
mAP@K), runs block by block and feeds all retrieval metrics; one k-means feeds NMI and F1.
Memory stays at block x k neighbour ids, never queries x gallery.

Queries and gallery may be the same set (the test split, each image querying all others; the
query is excluded by index) or separate sets (query/gallery protocols such as In-Shop).
Neighbours come from exact brute-force search or from a built FAISS index; for an approximate
index the evaluator also reports how often its top-1 agrees with exact search on a sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

from dml.errors import ConfigError
from dml.indexing import Searcher, drop_self, exact_searcher, index_searcher, is_exact, metric_name, search_neighbours
from dml.metrics.clustering import cluster_and_score
from dml.metrics.retrieval import RetrievalScores, neighbours_needed, relevant_counts
from dml.retrieval_config import EvalConfig


@dataclass
class Evaluation:
    """Metrics (the content of metrics/eval.json) and how they were obtained."""

    metrics: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    neighbours: int = 0
    threads: int = 0


def evaluate_embeddings(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    *,
    cfg: EvalConfig = EvalConfig(),
    index: faiss.Index | None = None,
    metric: str = "l2",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Evaluation:
    """Evaluate ``queries`` against ``gallery`` (None: the queries themselves, self excluded).

    ``index``: a FAISS index over the gallery, used when ``cfg.search == "index"`` (its metric
    then wins over ``metric``); without one, search is exact with ``metric`` ("ip" or "l2")."""
    same_set = gallery is None
    if same_set:
        gallery, gallery_labels = queries, query_labels
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if index is not None:
        if index.ntotal != len(gallery):
            raise ValueError(f"index holds {index.ntotal} vectors but the gallery has {len(gallery)}")
        metric = metric_name(index)
    exact = exact_searcher(gallery, metric)
    use_index = index is not None and cfg.search == "index"
    search = index_searcher(index) if use_index else exact

    searchable = len(gallery) - int(same_set)
    trivial = [k for k in cfg.recall_at if k >= searchable]
    if trivial:
        raise ConfigError(
            f"eval.recall_at: k={trivial[0]} reaches the whole gallery ({searchable} searchable items), "
            f"where Recall@k is 1 by construction; use k < {searchable}"
        )
    relevant = relevant_counts(query_labels, gallery_labels, same_set)
    k = neighbours_needed(relevant, cfg.recall_at, cfg.map_at, len(gallery) - int(same_set))
    threads = faiss.omp_get_max_threads()
    source = f"{type(index).__name__} index" if use_index else f"exact {metric} search"
    if log:
        log(f"evaluating {len(queries)} queries against {'themselves' if same_set else 'a gallery'} of "
            f"{len(gallery)} ({len(np.unique(query_labels))} query classes): {source}, k={k}, {threads} threads")

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    scores = RetrievalScores(cfg.recall_at, cfg.map_at)
    top1 = np.empty(len(queries), dtype=np.int64)
    for start, ids in search_neighbours(search, queries, k, exclude_self=same_set, block_size=cfg.block_size, progress=progress):
        stop = start + len(ids)
        hits = (gallery_labels[ids] == query_labels[start:stop, None]) & (ids >= 0)
        scores.add(hits, relevant[start:stop])
        top1[start:stop] = ids[:, 0]
    seconds["search"] = time.perf_counter() - started
    metrics = scores.result()

    if index is not None:
        started = time.perf_counter()
        metrics["index_top1_agreement"] = top1_agreement(
            index, exact, queries, top1 if use_index else None, cfg, same_set
        )
        seconds["agreement"] = time.perf_counter() - started

    if cfg.clustering:
        started = time.perf_counter()
        metrics.update(cluster_and_score(queries, query_labels, seed=cfg.kmeans_seed, iters=cfg.kmeans_iters))
        seconds["clustering"] = time.perf_counter() - started

    metrics.update({
        "num_queries": int(len(queries)),
        "num_gallery": int(len(gallery)),
        "num_classes": int(len(np.unique(query_labels))),
        "num_queries_without_positive": scores.without_positive,
    })
    return Evaluation(metrics=metrics, seconds=seconds, neighbours=k, threads=threads)


def top1_agreement(
    index: faiss.Index,
    exact: Searcher,
    queries: np.ndarray,
    index_top1: np.ndarray | None,
    cfg: EvalConfig,
    same_set: bool,
) -> float:
    """Fraction of sampled queries whose first neighbour from ``index`` is the exact first
    neighbour (1.0 for an exact index, which *is* exact search). ``index_top1``: the index's
    first neighbours of all queries when the evaluation already searched it."""
    if is_exact(index) or cfg.agreement_sample == 0:
        return 1.0
    n = len(queries)
    sample = np.sort(np.random.default_rng(0).choice(n, size=min(cfg.agreement_sample, n), replace=False))
    width = 2 if same_set else 1

    def first(search: Searcher) -> np.ndarray:
        found = search(np.ascontiguousarray(queries[sample], dtype=np.float32), width)[1]
        if same_set:  # drop the query itself by index, as the main search does
            found = drop_self(found, sample)
        return found[:, 0]

    approx = index_top1[sample] if index_top1 is not None else first(index_searcher(index))
    return float(np.mean(first(exact) == approx))
