"""Stage evaluate: retrieval and clustering metrics on the unseen test classes."""

from __future__ import annotations

import faiss
import numpy as np

from dml.config import Params
from dml.embeddings import read_embeddings
from dml.errors import DatasetError
from dml.io import write_json
from dml.metrics.clustering import nmi
from dml.metrics.retrieval import (
    knn_excluding_self,
    map_at_r,
    neighbours_needed,
    recall_at_k,
)
from dml.paths import EVAL_METRICS, INDEX, embeddings_file
from stages._common import run_stage


def evaluate(params: Params) -> None:
    cfg = params.eval
    table = read_embeddings(embeddings_file("test"))
    index_file = INDEX / "test.faiss"
    if not index_file.is_file():
        raise DatasetError(f"{index_file}: index missing (run the index stage)")
    index = faiss.read_index(str(index_file))
    if index.ntotal != len(table.ids):
        raise DatasetError(f"{index_file}: holds {index.ntotal} vectors but {embeddings_file('test')} has {len(table.ids)}")
    k = neighbours_needed(table.labels, cfg.recall_at)
    print(f"searching {len(table.ids)} queries x {index.ntotal} gallery, k={k}, {faiss.omp_get_max_threads()} threads")
    neighbour_labels = table.labels[knn_excluding_self(index, table.vectors, k)]
    metrics = {f"recall_at_{k}": value for k, value in recall_at_k(neighbour_labels, table.labels, cfg.recall_at).items()}
    metrics["map_at_r"] = map_at_r(neighbour_labels, table.labels)
    metrics["nmi"] = nmi(table.vectors, table.labels, seed=cfg.kmeans_seed, iters=cfg.kmeans_iters)
    metrics["num_queries"] = int(len(table.ids))
    metrics["num_classes"] = int(len(np.unique(table.labels)))
    write_json(EVAL_METRICS, metrics)
    print(", ".join(f"{key} {value:.4f}" for key, value in metrics.items() if isinstance(value, float)))


def main() -> None:
    run_stage("evaluate", evaluate)


if __name__ == "__main__":
    main()
