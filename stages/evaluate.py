"""Stage evaluate: retrieval and clustering metrics on the unseen test classes, from the index
stage's index or exact search: each test image queries all the others, or, for a query/gallery
dataset (In-Shop), each query searches the gallery (``protocol`` in metrics/eval.json says which)."""

from __future__ import annotations

import faiss

from dml.config import Params
from dml.embeddings import read_embeddings
from dml.errors import DatasetError
from dml.evaluation import evaluate_embeddings
from dml.io import write_json
from dml.paths import EVAL_METRICS, INDEX_FILE, embeddings_file, retrieval_splits
from stages._common import run_stage


def evaluate(params: Params) -> None:
    query_split, gallery_split = retrieval_splits()
    queries, gallery = read_embeddings(embeddings_file(query_split)), read_embeddings(embeddings_file(gallery_split))
    if not INDEX_FILE.is_file():
        raise DatasetError(f"{INDEX_FILE}: index missing (run the index stage)")
    index = faiss.read_index(str(INDEX_FILE))
    if index.ntotal != len(gallery.ids):
        raise DatasetError(f"{INDEX_FILE}: holds {index.ntotal} vectors but {embeddings_file(gallery_split)} has {len(gallery.ids)}")
    # The index file carries its query-time knobs (nprobe, efSearch, k_factor) as the index stage set them.
    separate = query_split != gallery_split
    result = evaluate_embeddings(queries.vectors, queries.labels,
                                 gallery.vectors if separate else None, gallery.labels if separate else None,
                                 cfg=params.eval, index=index, progress=True, log=print)
    protocol = "query vs gallery" if separate else "all vs all (query excluded)"
    write_json(EVAL_METRICS, {**result.metrics, "protocol": protocol, "queries": len(queries.ids), "gallery": len(gallery.ids)})
    print(f"{protocol}: {len(queries.ids)} queries, {len(gallery.ids)} gallery items")
    print(", ".join(f"{key} {value:.4f}" for key, value in result.metrics.items() if isinstance(value, float)))
    print("seconds: " + ", ".join(f"{key} {value:.2f}" for key, value in result.seconds.items()))


def main() -> None:
    run_stage("evaluate", evaluate)


if __name__ == "__main__":
    main()
