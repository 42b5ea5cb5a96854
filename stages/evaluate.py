"""Stage evaluate: retrieval and clustering metrics on the unseen test classes (each test image
queries all the others), from the index stage's index or exact search."""

from __future__ import annotations

import faiss

from dml.config import Params
from dml.embeddings import read_embeddings
from dml.errors import DatasetError
from dml.evaluation import evaluate_embeddings
from dml.io import write_json
from dml.paths import EVAL_METRICS, INDEX_FILE, embeddings_file
from stages._common import run_stage


def evaluate(params: Params) -> None:
    table = read_embeddings(embeddings_file("test"))
    if not INDEX_FILE.is_file():
        raise DatasetError(f"{INDEX_FILE}: index missing (run the index stage)")
    index = faiss.read_index(str(INDEX_FILE))
    if index.ntotal != len(table.ids):
        raise DatasetError(f"{INDEX_FILE}: holds {index.ntotal} vectors but {embeddings_file('test')} has {len(table.ids)}")
    # The index file carries its query-time knobs (nprobe, efSearch, k_factor) as the index stage set them.
    result = evaluate_embeddings(table.vectors, table.labels, cfg=params.eval, index=index, progress=True, log=print)
    write_json(EVAL_METRICS, result.metrics)
    print(", ".join(f"{key} {value:.4f}" for key, value in result.metrics.items() if isinstance(value, float)))
    print("seconds: " + ", ".join(f"{key} {value:.2f}" for key, value in result.seconds.items()))


def main() -> None:
    run_stage("evaluate", evaluate)


if __name__ == "__main__":
    main()
