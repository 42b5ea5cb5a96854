"""Stage index: build the FAISS index over the test embeddings (the retrieval gallery)."""

from __future__ import annotations

import time

import faiss

from dml.config import Params
from dml.embeddings import read_embeddings
from dml.indexing import flat_index
from dml.io import atomic_dir, write_json
from dml.paths import INDEX, embeddings_file
from stages._common import run_stage


def build_index(params: Params) -> None:
    table = read_embeddings(embeddings_file("test"))
    started = time.perf_counter()
    index = flat_index(table.vectors, params.index.metric)
    seconds = time.perf_counter() - started
    with atomic_dir(INDEX) as root:
        faiss.write_index(index, str(root / "test.faiss"))
        write_json(root / "meta.json", {
            "type": params.index.type,
            "metric": params.index.metric,
            "ntotal": int(index.ntotal),
            "dim": int(index.d),
            "build_seconds": round(seconds, 4),
            "source": str(embeddings_file("test")),
        })
    print(f"{params.index.type} index ({params.index.metric}) over {index.ntotal} x {index.d} test embeddings")


def main() -> None:
    run_stage("index", build_index)


if __name__ == "__main__":
    main()
