"""Stage embed: export the embeddings of every split the manifest has (train, val, and test or
query + gallery) as Parquet, on the training device."""

from __future__ import annotations

from dml.config import Params
from dml.data.loading import load_splits
from dml.device import resolve_device
from dml.embeddings import EmbeddingTable, write_embeddings
from dml.inference import embed_source
from dml.io import atomic_dir
from dml.model_file import load_model
from dml.paths import EMBEDDINGS, MODEL, PREPROCESSED
from stages._common import run_stage


def embed(params: Params) -> None:
    device = resolve_device(params.train.device)
    model = load_model(MODEL).to(device)
    with atomic_dir(EMBEDDINGS) as root:
        for split, source in load_splits(PREPROCESSED).items():
            vectors = embed_source(model, source, params.transforms, params.embed.batch_size, device,
                                   params.loader.num_workers, params.train.amp, progress=True)
            write_embeddings(root / f"{split}.parquet", EmbeddingTable(source.ids, source.labels, vectors))
            print(f"{split}: {vectors.shape[0]} x {vectors.shape[1]} embeddings")


def main() -> None:
    run_stage("embed", embed)


if __name__ == "__main__":
    main()
