"""Stage embed: export train and test embeddings of the trained model as Parquet."""

from __future__ import annotations

from dml.config import Params
from dml.data.arrays import load_split
from dml.data.manifest import SPLITS
from dml.embeddings import EmbeddingTable, write_embeddings
from dml.inference import embed_arrays
from dml.io import atomic_dir
from dml.models.checkpoint import load_model
from dml.paths import EMBEDDINGS, MODEL, PREPROCESSED
from stages._common import run_stage


def embed(params: Params) -> None:
    model = load_model(MODEL)
    with atomic_dir(EMBEDDINGS) as root:
        for split in SPLITS:
            arrays = load_split(PREPROCESSED, split)
            vectors = embed_arrays(model, arrays.images, params.embed.batch_size, progress=True)
            write_embeddings(root / f"{split}.parquet", EmbeddingTable(arrays.ids, arrays.labels, vectors))
            print(f"{split}: {vectors.shape[0]} x {vectors.shape[1]} embeddings")


def main() -> None:
    run_stage("embed", embed)


if __name__ == "__main__":
    main()
