"""Stage index: build the FAISS index over the gallery embeddings (the test split, or the gallery
split of a query/gallery dataset) and record
its build and search statistics in index/meta.json."""

from __future__ import annotations

import time

import faiss
import numpy as np

from dml.config import Params
from dml.embeddings import read_embeddings
from dml.indexing import build_index, exact_searcher, factory_string, index_searcher, search_parameters
from dml.io import atomic_dir, write_json
from dml.paths import INDEX, INDEX_FILE, INDEX_META, TIMINGS, embeddings_file, retrieval_splits
from dml.retrieval_config import IndexConfig
from stages._common import run_stage

TIMING_QUERIES = 1000  # queries timed against the index and against brute force
TIMING_K = 10
TIMING_REPEATS = 3


def search_stats(index: faiss.Index, vectors: np.ndarray, cfg: IndexConfig) -> dict[str, float]:
    """Per-query search time of the index and of exact search on the same sample, and their ratio."""
    sample = vectors[np.random.default_rng(0).choice(len(vectors), min(TIMING_QUERIES, len(vectors)), replace=False)]
    times = {}
    for name, search in (("index", index_searcher(index)), ("exact", exact_searcher(vectors, cfg.metric))):
        runs = []
        for _ in range(TIMING_REPEATS):  # best of a few: the first call also warms caches
            started = time.perf_counter()
            search(sample, TIMING_K)
            runs.append(time.perf_counter() - started)
        times[name] = min(runs) / len(sample)
    return {
        "timing_queries": len(sample),
        "search_ms_per_query": round(1e3 * times["index"], 4),
        "exact_ms_per_query": round(1e3 * times["exact"], 4),
        "speedup_vs_exact": round(times["exact"] / times["index"], 2),
    }


def index_stage(params: Params) -> None:
    cfg = params.index
    gallery_split = retrieval_splits()[1]
    table = read_embeddings(embeddings_file(gallery_split))
    started = time.perf_counter()
    index = build_index(table.vectors, cfg)
    build_seconds = time.perf_counter() - started
    with atomic_dir(INDEX) as root:
        faiss.write_index(index, str(root / INDEX_FILE.name))
        meta = {
            "type": cfg.type,
            "factory": factory_string(cfg),
            "search_parameters": search_parameters(cfg),
            "metric": cfg.metric,
            "ntotal": int(index.ntotal),
            "dim": int(index.d),
            "bytes": (root / INDEX_FILE.name).stat().st_size,
            "source": embeddings_file(gallery_split).as_posix(),
        }
        write_json(root / INDEX_META.name, meta)
    # times of this machine: beside, not in, the DVC output (see dml.paths.TIMINGS)
    timings = {"build_seconds": round(build_seconds, 4), "threads": faiss.omp_get_max_threads(), **search_stats(index, table.vectors, cfg)}
    TIMINGS.mkdir(parents=True, exist_ok=True)
    write_json(TIMINGS / "index.json", timings)
    meta = {**meta, **timings}
    print(f"{meta['factory']} index ({cfg.metric}) over {index.ntotal} x {index.d} {gallery_split} embeddings: "
          f"built in {build_seconds:.2f} s, {meta['bytes'] / 2**20:.1f} MiB, "
          f"{meta['search_ms_per_query']} ms/query ({meta['speedup_vs_exact']}x exact)")


def main() -> None:
    run_stage("index", index_stage)


if __name__ == "__main__":
    main()
