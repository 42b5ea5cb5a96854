"""Retrieval galleries: which queries fail, and what their nearest neighbours look like.

A gallery is a PNG grid with one row per query: the query thumbnail, then its top-k retrieved
thumbnails, each framed green (same class as the query) or red (another class), with the
distance printed under it. The rows are

* a fixed sample of queries drawn by *id* with a seed (:func:`sample_query_positions`), so two
  runs over the same test set show the same queries row by row, whatever their embeddings, and
* the worst-ranked queries (:func:`worst_query_positions`): the largest rank of the first
  correct neighbour (:func:`first_correct_ranks`, exact, self excluded), with the first correct
  neighbour drawn after the top-k when it ranks beyond it.

Queries and gallery may be one set (each test image queries all the others; the query itself is
excluded by position, as in the evaluation) or separate sets (In-Shop style query/gallery
splits): pass ``gallery=None`` or a second table. The rows are drawn by
:func:`dml.plotting.draw_gallery`, which the query command draws its results with too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dml.catalogue import Catalogue
from dml.embeddings import EmbeddingTable
from dml.indexing import Searcher, self_excluded
from dml.plotting import OTHER_CLASS, QUERY, SAME_CLASS, UNKNOWN_CLASS, GalleryRow, Tile

NO_POSITIVE = 0  # first-correct rank of a query whose class has no other gallery image


def display_distance(scores: np.ndarray, metric: str) -> np.ndarray:
    """What the figure prints: the L2 distance (FAISS returns it squared) or the inner product."""
    return np.sqrt(np.maximum(scores, 0.0)) if metric == "l2" else scores


def pair_scores(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """FAISS's score of each row pair: squared L2 distance or inner product."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return ((a - b) ** 2).sum(1) if metric == "l2" else (a * b).sum(1)


def distance_name(metric: str) -> str:
    return "L2 distance" if metric == "l2" else "inner product (higher = nearer)"


@dataclass(frozen=True)
class Neighbours:
    positions: np.ndarray  # (queries, k) gallery positions, nearest first; -1 where fewer were found
    distances: np.ndarray  # (queries, k) as :func:`display_distance` gives them


def nearest(search: Searcher, queries: np.ndarray, k: int, metric: str, own_positions: np.ndarray | None = None) -> Neighbours:
    """The ``k`` nearest gallery items of each query. ``own_positions``: the queries are gallery
    items themselves, removed by position exactly as the evaluation removes them (search k + 1,
    drop the query, or the last hit when the query is not among them)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if own_positions is None:
        scores, found = search(queries, k)
    else:
        scores, found = search(queries, k + 1)
        keep = self_excluded(found, own_positions)
        scores, found = scores[keep].reshape(len(found), k), found[keep].reshape(len(found), k)
    return Neighbours(found, display_distance(scores, metric))


def first_correct_ranks(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    metric: str = "l2",
    block_elements: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray]:
    """(rank, position) of each query's first same-class gallery item by exact search: rank is
    1-based (1 = the nearest neighbour is correct), :data:`NO_POSITIVE` when the gallery holds no
    other image of the query's class (position -1 then).

    ``gallery=None``: the queries are the gallery and each query is excluded by position. Exact
    ties are ordered by gallery position, as FAISS orders them. Works in blocks of about
    ``block_elements`` query x gallery scores, so memory stays bounded for any gallery; the
    gallery is grouped by class so that each query's best positive is one ``minimum.reduceat``."""
    same_set = gallery is None
    gallery = np.asarray(queries if same_set else gallery, dtype=np.float32)
    gallery_labels = np.asarray(query_labels if same_set else gallery_labels)
    query_labels = np.asarray(query_labels)
    by_class = np.argsort(gallery_labels, kind="stable")  # column c of a score block = gallery position by_class[c]
    column_of = np.empty_like(by_class)
    column_of[by_class] = np.arange(len(by_class))
    grouped = np.ascontiguousarray(gallery[by_class])
    grouped_labels = gallery_labels[by_class]
    class_starts = np.flatnonzero(np.r_[True, grouped_labels[1:] != grouped_labels[:-1]])
    class_ends = np.r_[class_starts[1:], len(grouped)]
    class_values = grouped_labels[class_starts]
    # Smaller score = nearer. For l2 the query's own norm is the same along a row: ranks need only
    # |g|^2 - 2 q.g, and identical gallery vectors keep identical scores (ties stay ties).
    norms = (grouped * grouped).sum(1) if metric == "l2" else None
    slot = np.minimum(np.searchsorted(class_values, query_labels), len(class_values) - 1)
    has_class = class_values[slot] == query_labels
    ranks = np.zeros(len(queries), dtype=np.int64)
    first = np.full(len(queries), -1, dtype=np.int64)
    block = max(1, block_elements // max(1, len(grouped)))
    for start in range(0, len(queries), block):
        stop = min(start + block, len(queries))
        rows = np.arange(stop - start)
        scores = np.ascontiguousarray(queries[start:stop], dtype=np.float32) @ grouped.T
        if metric == "l2":
            scores *= -2.0
            scores += norms
        else:
            np.negative(scores, out=scores)
        if same_set:
            scores[rows, column_of[start:stop]] = np.inf
        best = np.minimum.reduceat(scores, class_starts, axis=1)[rows, slot[start:stop]]
        found = has_class[start:stop] & np.isfinite(best)
        closer = np.count_nonzero(scores < best[:, None], axis=1)
        at_best = np.count_nonzero(scores <= best[:, None], axis=1) - closer
        for row in np.flatnonzero(found):
            query = start + row
            c0, c1 = class_starts[slot[query]], class_ends[slot[query]]
            tied_positives = by_class[c0 + np.flatnonzero(scores[row, c0:c1] == best[row])]
            first[query] = tied_positives.min()
            if at_best[row] > 1:  # exact ties: FAISS puts the lower gallery positions first
                tied = by_class[np.flatnonzero(scores[row] == best[row])]
                closer[row] += np.count_nonzero(tied < first[query])
            ranks[query] = closer[row] + 1
    return ranks, first


def sample_query_positions(query_ids: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Positions of ``count`` queries drawn by id with ``seed``, in ascending id order: the draw
    depends only on the set of ids, so every run over the same test set shows the same queries."""
    ids = np.asarray(query_ids)
    chosen = np.random.default_rng(seed).choice(np.sort(ids), size=min(count, len(ids)), replace=False)
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids[order], np.sort(chosen))]


def worst_query_positions(ranks: np.ndarray, query_ids: np.ndarray, count: int, exclude: Sequence[int] = ()) -> np.ndarray:
    """Positions of the ``count`` queries with the largest first-correct rank (ties: smaller id
    first), leaving out queries without a positive and the positions in ``exclude``."""
    candidates = np.flatnonzero(ranks != NO_POSITIVE)
    candidates = candidates[~np.isin(candidates, np.asarray(exclude, dtype=np.int64))]
    order = np.lexsort((np.asarray(query_ids)[candidates], -ranks[candidates]))
    return candidates[order[:count]]


@dataclass(frozen=True)
class Selection:
    """The queries a gallery shows and what was retrieved for them (positions in the tables)."""

    kinds: list[str]  # per row: "sample" | "worst"
    queries: np.ndarray  # (rows,) query positions
    neighbours: Neighbours  # (rows, k)
    first_correct: np.ndarray  # (rows,) rank of the first correct neighbour, NO_POSITIVE if none
    first_correct_position: np.ndarray  # (rows,) its gallery position, -1 if none
    first_correct_distance: np.ndarray  # (rows,) its distance (display units), nan if none
    all_ranks: np.ndarray  # (all queries,) first-correct ranks, for the summary numbers


def select_gallery(
    queries: EmbeddingTable,
    search: Searcher,
    metric: str,
    *,
    k: int,
    sample: int,
    worst: int,
    seed: int,
    gallery: EmbeddingTable | None = None,
) -> Selection:
    """Pick the rows (``sample`` seeded queries, then the ``worst`` worst-ranked others) and
    retrieve their top ``k`` with ``search`` (over ``gallery``, or over the queries themselves
    when it is None)."""
    same_set = gallery is None
    target = queries if same_set else gallery
    ranks, first = first_correct_ranks(queries.vectors, queries.labels, None if same_set else target.vectors, target.labels, metric)
    sampled = sample_query_positions(queries.ids, sample, seed)
    worst_rows = worst_query_positions(ranks, queries.ids, worst, exclude=sampled)
    rows = np.concatenate([sampled, worst_rows]).astype(np.int64)
    k = min(k, len(target.ids) - (1 if same_set else 0))
    neighbours = nearest(search, queries.vectors[rows], k, metric, own_positions=rows if same_set else None)
    first_distance = np.full(len(rows), np.nan)
    has = first[rows] >= 0
    first_distance[has] = display_distance(pair_scores(queries.vectors[rows[has]], target.vectors[first[rows[has]]], metric), metric)
    return Selection(
        kinds=["sample"] * len(sampled) + ["worst"] * len(worst_rows),
        queries=rows,
        neighbours=neighbours,
        first_correct=ranks[rows],
        first_correct_position=first[rows],
        first_correct_distance=first_distance,
        all_ranks=ranks,
    )


def hit_tiles(
    catalogue: Catalogue, gallery_ids: np.ndarray, positions: np.ndarray, distances: np.ndarray, query_label: int | None
) -> list[Tile]:
    """Tiles of retrieved items (skipping -1 = not found), framed by class agreement."""
    tiles = []
    for position, distance in zip(positions, distances):
        if position < 0:
            continue
        item_id = int(gallery_ids[position])
        label = catalogue.label(item_id)
        border = UNKNOWN_CLASS if query_label is None else SAME_CLASS if label == query_label else OTHER_CLASS
        tiles.append(Tile(catalogue.picture(item_id), (catalogue.class_name(item_id), f"{distance:.3f}"), border))
    return tiles


def selection_rows(selection: Selection, catalogue: Catalogue, query_ids: np.ndarray, gallery_ids: np.ndarray | None = None) -> list[GalleryRow]:
    """The figure rows of a :func:`select_gallery` result (``gallery_ids``: None = the queries')."""
    gallery_ids = query_ids if gallery_ids is None else gallery_ids
    rows = []
    for row, (kind, position) in enumerate(zip(selection.kinds, selection.queries)):
        query_id = int(query_ids[position])
        label = catalogue.label(query_id)
        rank = int(selection.first_correct[row])
        rank_line = "no other of its class" if rank == NO_POSITIVE else f"1st correct @ {rank}"
        query = Tile(catalogue.picture(query_id), (f"{kind} #{query_id}", catalogue.class_name(query_id), rank_line), QUERY)
        hits = hit_tiles(catalogue, gallery_ids, selection.neighbours.positions[row], selection.neighbours.distances[row], label)
        extra = None
        if rank > len(hits):
            first_id = int(gallery_ids[selection.first_correct_position[row]])
            caption = (f"rank {rank}", catalogue.class_name(first_id), f"{selection.first_correct_distance[row]:.3f}")
            extra = Tile(catalogue.picture(first_id), caption, SAME_CLASS)
        rows.append(GalleryRow(query, hits, extra))
    return rows


def run_description(training: dict, index_meta: dict) -> str:
    """One line naming the run: model, loss, miner, epochs (configs/train.json) and the index."""
    model, train = training["model"], training["train"]
    return (f"{model['name']} {model['embed_dim']}-d · loss {training['loss']['name']} · miner {training['miner']['name']} · "
            f"{train['epochs']} epoch{'s' if train['epochs'] != 1 else ''} · index {index_meta['factory']} ({index_meta['metric']})")


def summary_lines(selection: Selection, query_labels: np.ndarray, training: dict, index_meta: dict, seed: int, metric: str) -> list[str]:
    """The figure's title: what was searched, the run, its key numbers (from the exact
    first-correct ranks of *all* queries) and how to read the rows."""
    ranks = selection.all_ranks[selection.all_ranks != NO_POSITIVE]
    k = selection.neighbours.positions.shape[1]
    numbers = (f"R@1 {np.mean(ranks == 1):.3f} · first correct within top-{k}: {np.mean(ranks <= k):.3f} · "
               f"median first-correct rank {np.median(ranks):g} (exact search, self excluded)") if len(ranks) else "no query has a positive"
    sample, worst = selection.kinds.count("sample"), selection.kinds.count("worst")
    return [
        f"Retrieval gallery: test split, {len(query_labels):,} queries, {len(np.unique(query_labels)):,} classes",
        run_description(training, index_meta),
        numbers,
        f"Rows: {sample} fixed queries (ids drawn with seed {seed}), then the {worst} worst-ranked; "
        f"far right: the first correct neighbour when it ranks beyond the top-{k}.",
        f"Border: green = same class as the query, red = another class. Under each image: class, {distance_name(metric)}.",
    ]
