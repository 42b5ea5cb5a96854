"""Embedding tables on disk: Parquet with ``id`` (int64), ``label`` (int64) and ``vector``
(fixed-size list of float32), one file per split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dml.errors import DatasetError


@dataclass(frozen=True)
class EmbeddingTable:
    ids: np.ndarray
    labels: np.ndarray
    vectors: np.ndarray  # float32, N x D


def write_embeddings(path: Path, table: EmbeddingTable) -> None:
    n, dim = table.vectors.shape
    flat = pa.array(np.ascontiguousarray(table.vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    arrow = pa.table(
        {
            "id": pa.array(table.ids, type=pa.int64()),
            "label": pa.array(table.labels, type=pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    )
    pq.write_table(arrow, path)


def read_embeddings(path: Path) -> EmbeddingTable:
    if not Path(path).is_file():
        raise DatasetError(f"{path}: embeddings missing (run the embed stage)")
    arrow = pq.read_table(path)
    vector = arrow.column("vector").combine_chunks()
    if not pa.types.is_fixed_size_list(vector.type):
        raise DatasetError(f"{path}: column 'vector' must be a fixed-size list, got {vector.type}")
    dim = vector.type.list_size
    vectors = vector.flatten().to_numpy().astype(np.float32, copy=False).reshape(-1, dim)
    return EmbeddingTable(
        ids=arrow.column("id").to_numpy(),
        labels=arrow.column("label").to_numpy(),
        vectors=vectors,
    )
