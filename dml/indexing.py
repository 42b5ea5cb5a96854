"""FAISS indexes over embedding tables, and the blocked k-nearest-neighbour search that every
retrieval metric is computed from.

Index types (``index.type`` in params.yaml): ``flat`` (exact), ``ivf`` (inverted lists over a
k-means partition, ``nprobe`` cells visited per query) and ``hnsw`` (navigable small-world
graph, ``ef_search`` candidates per query); ``pq_m > 0`` stores ivf/hnsw vectors as product-
quantiser codes instead of full floats. They are built through ``faiss.index_factory`` and
tuned through ``faiss.ParameterSpace``, FAISS's own names for the same choices.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np
from tqdm import tqdm

from dml.errors import ConfigError, DatasetError

if TYPE_CHECKING:  # annotations only: the search code (train's monitoring curve uses it) needs no schema
    from dml.retrieval_config import IndexConfig

FAISS_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}

# (queries (b x d), k) -> (scores (b x k), gallery ids (b x k)), as faiss.Index.search: squared L2
# distances or inner products, nearest first; id -1 where fewer than k were found
Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def factory_string(cfg: IndexConfig) -> str:
    """The ``faiss.index_factory`` description of an index config, e.g. ``IVF64,PQ16x4fs,RFlat``
    (4-bit IVF codes use FAISS's SIMD fast-scan; ``RFlat`` re-ranks with the exact vectors)."""
    if cfg.type == "flat":
        return "Flat"
    refine = ",RFlat" if cfg.refine_factor else ""
    if cfg.type == "ivf":
        codes = f"PQ{cfg.pq_m}x{cfg.pq_nbits}{'fs' if cfg.pq_nbits == 4 else ''}" if cfg.pq_m else "Flat"
        return f"IVF{cfg.nlist},{codes}{refine}"
    return f"HNSW{cfg.hnsw_m}_PQ{cfg.pq_m}x{cfg.pq_nbits}{refine}" if cfg.pq_m else f"HNSW{cfg.hnsw_m},Flat"


def search_parameters(cfg: IndexConfig) -> str:
    """Query-time knobs in ``faiss.ParameterSpace`` syntax (empty for exact search)."""
    knobs = {"flat": [], "ivf": [f"nprobe={cfg.nprobe}"], "hnsw": [f"efSearch={cfg.ef_search}"]}[cfg.type]
    if cfg.refine_factor:
        knobs.append(f"k_factor_rf={cfg.refine_factor}")
    return ",".join(knobs)


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run FAISS with ``threads`` OpenMP threads inside the block (None: leave as is)."""
    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def build_index(vectors: np.ndarray, cfg: IndexConfig) -> faiss.Index:
    """Train (ivf, pq) and fill an index over ``vectors`` as ``cfg`` describes.

    HNSW insertion order depends on thread scheduling, so with ``cfg.deterministic`` the graph is
    built on one thread: same embeddings, same graph, same metrics."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if cfg.type == "ivf" and cfg.nlist > n:
        raise ConfigError(f"params.yaml: index.nlist: {cfg.nlist} cells for only {n} vectors; use at most {n}")
    if cfg.pq_m and dim % cfg.pq_m:
        raise ConfigError(f"params.yaml: index.pq_m: {cfg.pq_m} does not divide the embedding dimension {dim}")
    if cfg.pq_m and cfg.type == "ivf" and 2**cfg.pq_nbits > n:
        raise ConfigError(f"params.yaml: index.pq_nbits: {2**cfg.pq_nbits} centroids per sub-quantiser for only {n} vectors")
    index = _new_index(dim, cfg)
    if cfg.type == "ivf":
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.seed = cfg.seed
        if cfg.pq_m:
            ivf.pq.cp.seed = cfg.seed
    if cfg.type == "hnsw":
        _hnsw_of(index).hnsw.efConstruction = cfg.ef_construction
    with faiss_threads(1 if cfg.type == "hnsw" and cfg.deterministic else None):
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
    configure_search(index, cfg)
    return index


def _new_index(dim: int, cfg: IndexConfig) -> faiss.Index:
    metric = FAISS_METRICS[cfg.metric]
    if cfg.type == "hnsw" and cfg.pq_m:
        # index_factory("HNSW.._PQ..") ignores the metric (FAISS 1.15); the constructor keeps it.
        index = faiss.IndexHNSWPQ(dim, cfg.pq_m, cfg.hnsw_m, cfg.pq_nbits, metric)
        if cfg.refine_factor:
            index = faiss.IndexRefineFlat(index)
    else:
        index = faiss.index_factory(dim, factory_string(cfg), metric)
    if index.metric_type != metric:
        raise RuntimeError(f"FAISS built a {factory_string(cfg)} index with metric {index.metric_type}, not {cfg.metric}")
    return index


def _hnsw_of(index: faiss.Index) -> faiss.Index:
    """The HNSW index itself, also when wrapped for re-ranking."""
    return faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index


def configure_search(index: faiss.Index, cfg: IndexConfig) -> None:
    """Set the query-time parameters (nprobe, efSearch, k_factor); index files keep them."""
    if parameters := search_parameters(cfg):
        faiss.ParameterSpace().set_index_parameters(index, parameters)


def read_index(path: Path, expected_rows: int, source: Path) -> faiss.Index:
    """The index file at ``path``, checked to hold one vector per row of ``source`` (the
    embeddings it was built from; positions in the index are rows of that table)."""
    if not Path(path).is_file():
        raise DatasetError(f"{path}: index missing (run the index stage)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise DatasetError(f"{path}: unreadable FAISS index ({reason})") from None
    if index.ntotal != expected_rows:
        raise DatasetError(f"{path}: holds {index.ntotal} vectors but {source} has {expected_rows} (rerun the index stage)")
    return index


def is_exact(index: faiss.Index) -> bool:
    return isinstance(index, faiss.IndexFlat)


def metric_name(index: faiss.Index) -> str:
    return {v: k for k, v in FAISS_METRICS.items()}[index.metric_type]


def exact_searcher(gallery: np.ndarray, metric: str) -> Searcher:
    """Brute-force search with ``faiss.knn``: the same BLAS kernels as ``IndexFlat``, without
    copying the gallery into an index."""
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    return lambda queries, k: faiss.knn(queries, gallery, k, metric=FAISS_METRICS[metric])


def index_searcher(index: faiss.Index) -> Searcher:
    return lambda queries, k: index.search(queries, k)


def search_neighbours(
    search: Searcher,
    queries: np.ndarray,
    k: int,
    *,
    exclude_self: bool,
    block_size: int = 4096,
    progress: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """The ``k`` nearest gallery ids of every query, block by block: yields ``(start, ids)`` with
    ``ids`` of shape (block, k), so memory stays at block x k whatever the gallery size.

    ``exclude_self``: the queries *are* the gallery (query i is gallery item i). The query is
    removed by index, not by distance, so an exact duplicate of the query still counts as a
    neighbour: search k + 1 and drop the query's own id, or the last hit when the query is not
    among them (more than k duplicates, or an approximate index that missed it)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    width = k + 1 if exclude_self else k
    blocks = range(0, len(queries), block_size)
    with tqdm(total=len(queries), unit="query", disable=not progress, file=sys.stderr, mininterval=1.0) as bar:
        for start in blocks:
            found = search(queries[start:start + block_size], width)[1]
            if exclude_self:
                found = drop_self(found, np.arange(start, start + len(found)))
            bar.update(len(found))
            yield start, found


def drop_self(found: np.ndarray, own_ids: np.ndarray) -> np.ndarray:
    """``found`` (queries x w gallery ids) without each query's own id ``own_ids[q]``, or without
    its last entry when the query is not among them: queries x (w - 1)."""
    keep = self_excluded(found, own_ids)
    return found[keep].reshape(len(found), found.shape[1] - 1)


def self_excluded(found: np.ndarray, own_ids: np.ndarray) -> np.ndarray:
    """The mask of :func:`drop_self` (False at the one entry dropped per row), for callers that
    must drop the same entries from arrays aligned with ``found`` (the distances)."""
    is_self = found == own_ids[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), found.shape[1] - 1)
    keep = np.ones(found.shape, dtype=bool)
    keep[np.arange(len(found)), drop] = False
    return keep
