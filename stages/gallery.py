"""Stage gallery: plots/gallery.png, rows of test queries (a fixed seeded sample, then the
worst-ranked) each followed by its top-k retrieved images, framed by class agreement."""

from __future__ import annotations

from dml.catalogue import Catalogue
from dml.config import Params
from dml.data.manifest import read_manifest
from dml.embeddings import read_embeddings
from dml.gallery import select_gallery, selection_rows, summary_lines
from dml.indexing import exact_searcher, index_searcher, metric_name, read_index
from dml.io import read_json
from dml.paths import GALLERY_PNG, INDEX_FILE, INDEX_META, PREPARED, TRAIN_CONFIG, embeddings_file, retrieval_splits
from dml.plotting import draw_gallery
from stages._common import run_stage


def gallery(params: Params) -> None:
    cfg = params.gallery
    query_split, gallery_split = retrieval_splits()
    table = read_embeddings(embeddings_file(query_split))
    gallery_table = read_embeddings(embeddings_file(gallery_split)) if gallery_split != query_split else None
    reference = gallery_table or table
    index = read_index(INDEX_FILE, len(reference.ids), embeddings_file(gallery_split))
    metric = metric_name(index)
    search = index_searcher(index) if cfg.search == "index" else exact_searcher(reference.vectors, metric)
    catalogue = Catalogue.from_manifest(read_manifest(PREPARED, check_files=False), PREPARED)
    selection = select_gallery(table, search, metric, k=cfg.k, sample=cfg.queries, worst=cfg.worst, seed=cfg.seed, gallery=gallery_table)
    title = summary_lines(selection, table.labels, read_json(TRAIN_CONFIG), read_json(INDEX_META), cfg.seed, metric)
    gallery_ids = gallery_table.ids if gallery_table is not None else None
    draw_gallery(selection_rows(selection, catalogue, table.ids, gallery_ids), GALLERY_PNG, title, cfg.thumb_px)
    print("\n".join(title))


def main() -> None:
    run_stage("gallery", gallery)


if __name__ == "__main__":
    main()
