"""Query the built index with image files.

``python -m dml.query IMAGE [IMAGE ...] --k 10 [--png out.png] [--root .]`` embeds the images
with the trained model (``models/model.pt``), decoded and transformed exactly as the embed stage
treated the test images (the channels and eval transforms the model was trained with), searches
``index/test.faiss`` and prints the nearest gallery items (id, label, class name, path,
distance) from the gallery embeddings and the manifest. ``--png`` draws
the results (the nearest :data:`PNG_MAX_NEIGHBOURS` at most) as a retrieval gallery (borders green/red when the query is a dataset image, whose
class is then known; grey otherwise). Missing pipeline outputs and unreadable images are one
line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dml.catalogue import Catalogue
from dml.data.manifest import read_manifest
from dml.embeddings import EmbeddingTable, read_embeddings
from dml.errors import DatasetError
from dml.gallery import Neighbours, distance_name, hit_tiles, nearest, run_description
from dml.indexing import index_searcher, metric_name, read_index
from dml.io import read_json
from dml.paths import INDEX_FILE, INDEX_META, MODEL, PREPARED, TRAIN_CONFIG, embeddings_file, find_repository, retrieval_splits
from dml.plotting import QUERY, GalleryRow, Tile, draw_gallery

# The picture's bounds: --k may ask for the whole gallery (the table lists it); a row of more
# thumbnails is unreadable, and its canvas grows with k times the thumbnail size.
PNG_MAX_NEIGHBOURS = 50
MAX_THUMB_PX = 512


@dataclass(frozen=True)
class QueryResult:
    images: list[Path]
    neighbours: Neighbours  # positions in the gallery table, nearest first
    metric: str


class Searcher:
    """The trained model, the test index and what its positions are (ids, labels, files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        gallery = self.root / embeddings_file(retrieval_splits(self.root / embeddings_file("test").parent)[1])
        self.table: EmbeddingTable = read_embeddings(gallery)
        self.index = read_index(self.root / INDEX_FILE, len(self.table.ids), gallery)
        self.metric = metric_name(self.index)
        self.catalogue = Catalogue.from_manifest(read_manifest(self.root / PREPARED, check_files=False), self.root / PREPARED)
        self.model, self.stats, self.transforms = load_trained(self.root / MODEL)
        if self.model.head.out_features != self.index.d:
            raise DatasetError(f"{self.root / MODEL}: the model embeds into {self.model.head.out_features} dimensions, "
                               f"{self.root / INDEX_FILE} holds {self.index.d}-d vectors (rerun embed and index)")

    def query(self, images: Sequence[Path], k: int) -> QueryResult:
        from dml.data.loading import FileSplit
        from dml.inference import embed_source

        for path in images:
            if not Path(path).exists():
                raise DatasetError(f"{path}: no such image file")
            if not Path(path).is_file():
                raise DatasetError(f"{path}: not a file")
        files = FileSplit(Path("."), np.array([str(p).encode() for p in images], dtype=np.bytes_),
                          np.full(len(images), -1), np.arange(len(images)), self.stats.channels)
        vectors = embed_source(self.model, files, self.transforms)
        neighbours = nearest(index_searcher(self.index), vectors, min(k, self.index.ntotal), self.metric)
        return QueryResult([Path(p) for p in images], neighbours, self.metric)

    def dataset_id(self, image: Path) -> int | None:
        return self.catalogue.id_of_file(image)


def load_trained(path: Path):
    """The model, the data statistics and the transforms it was trained with
    (:func:`dml.model_file.load_trained`), any failure to read them as one line."""
    from dml.model_file import load_trained as read_trained

    if not path.is_file():
        raise DatasetError(f"{path}: trained model missing (run the train stage)")
    try:
        return read_trained(path)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle/rebuild is one message
        raise DatasetError(f"{path}: unreadable model file ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def format_results(result: QueryResult, searcher: Searcher) -> str:
    """A table per query image: rank, distance, id, label, class name, path."""
    catalogue, ids = searcher.catalogue, searcher.table.ids
    score = "distance" if result.metric == "l2" else "inner_product"
    blocks = []
    for row, image in enumerate(result.images):
        own = searcher.dataset_id(image)
        known = f" (dataset id {own}, class {catalogue.class_name(own)})" if own is not None else ""
        lines = [[ "rank", score, "id", "label", "class", "path"]]
        for rank, (position, distance) in enumerate(zip(result.neighbours.positions[row], result.neighbours.distances[row]), 1):
            if position < 0:
                continue
            item_id = int(ids[position])
            lines.append([str(rank), f"{distance:.4f}", str(item_id), str(catalogue.label(item_id)), catalogue.class_name(item_id),
                          catalogue.name(item_id)])
        widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
        table = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
        blocks.append("\n".join([f"query {row + 1}: {image}{known}", *table]))
    return "\n\n".join(blocks)


def result_rows(result: QueryResult, searcher: Searcher) -> list[GalleryRow]:
    """Gallery rows of the results: the query image, then its hits."""
    catalogue = searcher.catalogue
    rows = []
    for row, image in enumerate(result.images):
        own = searcher.dataset_id(image)
        label = catalogue.label(own) if own is not None else None
        caption = (f"query {row + 1}", catalogue.class_name(own) if own is not None else "class unknown", image.name)
        hits = hit_tiles(catalogue, searcher.table.ids, result.neighbours.positions[row], result.neighbours.distances[row], label)
        rows.append(GalleryRow(Tile(image, caption, QUERY), hits))
    return rows


def write_png(result: QueryResult, searcher: Searcher, path: Path, thumb_px: int) -> int:
    """Draw the results; returns the neighbours per image it shows (at most PNG_MAX_NEIGHBOURS)."""
    shown = min(result.neighbours.positions.shape[1], PNG_MAX_NEIGHBOURS)
    neighbours = Neighbours(result.neighbours.positions[:, :shown], result.neighbours.distances[:, :shown])
    result = dataclasses.replace(result, neighbours=neighbours)
    title = [f"Query results: {len(result.images)} image(s), top-{shown} of {searcher.index.ntotal:,} test images"]
    training = searcher.root / TRAIN_CONFIG
    meta = searcher.root / INDEX_META
    if training.is_file() and meta.is_file():
        title.append(run_description(read_json(training), read_json(meta)))
    title.append(f"Border: green = same class as the query, red = another, grey = query class unknown. "
                 f"Under each image: class, {distance_name(result.metric)}.")
    draw_gallery(result_rows(result, searcher), path, title, thumb_px)
    return shown


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def positive(text: str, most: int | None = None) -> int:
        value = int(text)
        if value < 1 or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"must be >= 1{f' and <= {most}' if most else ''}, got {value}")
        return value

    def thumb_side(text: str) -> int:
        return positive(text, MAX_THUMB_PX)

    parser = argparse.ArgumentParser(prog="python -m dml.query", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files to query with")
    parser.add_argument("--k", type=positive, default=10, help="neighbours per image (default 10)")
    parser.add_argument("--png", type=Path, help="also draw the results as a gallery PNG here")
    parser.add_argument("--thumb-px", type=thumb_side, default=64,
                        help=f"thumbnail side in the PNG (default 64, at most {MAX_THUMB_PX})")
    parser.add_argument("--root", type=Path, default=None,
                        help="the pipeline's repository root (default: the folder with dvc.yaml at or above the cwd)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root or find_repository(Path.cwd())
    if root is None:
        print(f"error: no pipeline repository (dvc.yaml) in {Path.cwd()} or above; pass --root", file=sys.stderr)
        return 1
    try:
        searcher = Searcher(root)
        result = searcher.query(args.images, args.k)
        print(format_results(result, searcher))
        if args.png is not None:
            shown = write_png(result, searcher, args.png, args.thumb_px)
            found = result.neighbours.positions.shape[1]
            capped = f" (the nearest {shown} of {found} neighbours per image: the picture shows at most {PNG_MAX_NEIGHBOURS})"
            print(f"\nwrote {args.png}" + (capped if found > shown else ""))
    except (DatasetError, OSError) as err:  # OSError: the PNG cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
