"""The retrieval gallery's selection (fixed sample, worst queries, first-correct ranks, top-k
with the query removed) against brute-force numpy, and its drawing on real image files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from dml.catalogue import Catalogue
from dml.embeddings import EmbeddingTable
from dml.gallery import (
    NO_POSITIVE,
    first_correct_ranks,
    nearest,
    sample_query_positions,
    select_gallery,
    selection_rows,
    worst_query_positions,
)
from dml.indexing import exact_searcher as exact_distance_searcher
from dml.plotting import OTHER_CLASS, SAME_CLASS, draw_gallery, load_thumbnail


def clustered(n_classes: int = 12, per_class: int = 6, dim: int = 8, seed: int = 0, noise: float = 0.9):
    """Unit vectors around class centres, with exact duplicates (tied distances) and one class
    of a single image (a query without positive)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    labels = np.append(labels, n_classes)  # the lonely class
    vectors = rng.normal(size=(n_classes + 1, dim))[labels] + noise * rng.normal(size=(len(labels), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = rng.permutation(len(labels))  # classes interleaved, as in any real table
    vectors, labels = vectors[order].astype(np.float32), labels[order]
    other_class = np.flatnonzero(labels != labels[5])[-1]
    same_class = np.flatnonzero(labels == labels[7])[-1]
    vectors[5] = vectors[other_class]  # a duplicate of another class's image: a tie at some rank
    vectors[7] = vectors[same_class]  # a duplicate within the class
    return vectors, labels


def brute_force_ranks(queries, query_labels, gallery, gallery_labels, metric, same_set):
    """Full sort of float64 distances, ties by gallery position, self removed by position."""
    q, g = queries.astype(np.float64), gallery.astype(np.float64)
    scores = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1) if metric == "l2" else -(q @ g.T)
    ranks, first = [], []
    for i in range(len(q)):
        order = np.lexsort((np.arange(len(g)), scores[i]))
        if same_set:
            order = order[order != i]
        hits = np.flatnonzero(gallery_labels[order] == query_labels[i])
        ranks.append(hits[0] + 1 if len(hits) else NO_POSITIVE)
        first.append(order[hits[0]] if len(hits) else -1)
    return np.array(ranks), np.array(first)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_first_correct_ranks_same_set(metric):
    """Reference: brute-force float64 distance matrix, stable sort by (distance, gallery position),
    query dropped by position, rank of the first same-class item (0 when none)."""
    vectors, labels = clustered()
    ranks, first = first_correct_ranks(vectors, labels, metric=metric, block_elements=7 * len(labels))  # several blocks
    expected_ranks, expected_first = brute_force_ranks(vectors, labels, vectors, labels, metric, same_set=True)
    np.testing.assert_array_equal(ranks, expected_ranks)
    np.testing.assert_array_equal(first, expected_first)
    assert (ranks == NO_POSITIVE).sum() == 1 and ranks.max() > 3  # the lonely query; some queries fail


def test_first_correct_ranks_query_vs_gallery():
    """Reference: brute force over a separate gallery (In-Shop style): nothing is excluded, a
    query identical to a gallery image ranks it first."""
    vectors, labels = clustered(seed=1)
    queries, query_labels = vectors[:30].copy(), labels[:30]
    gallery, gallery_labels = vectors[30:], labels[30:]
    queries[0] = gallery[3]
    query_labels = query_labels.copy()
    query_labels[0] = gallery_labels[3]
    ranks, first = first_correct_ranks(queries, query_labels, gallery, gallery_labels, metric="l2")
    expected_ranks, expected_first = brute_force_ranks(queries, query_labels, gallery, gallery_labels, "l2", same_set=False)
    np.testing.assert_array_equal(ranks, expected_ranks)
    np.testing.assert_array_equal(first, expected_first)
    assert ranks[0] == 1 and first[0] == 3

    query_table = EmbeddingTable(np.arange(30), query_labels, queries)
    gallery_table = EmbeddingTable(np.arange(100, 100 + len(gallery)), gallery_labels, gallery)
    selection = select_gallery(query_table, exact_distance_searcher(gallery, "l2"), "l2", k=4, sample=3, worst=2, seed=0, gallery=gallery_table)
    distances = ((queries[selection.queries, None, :].astype(np.float64) - gallery[None]) ** 2).sum(-1)
    expected_top = np.array([np.lexsort((np.arange(len(gallery)), row))[:4] for row in distances])
    np.testing.assert_array_equal(selection.neighbours.positions, expected_top)
    np.testing.assert_array_equal(selection.first_correct, expected_ranks[selection.queries])


def test_fixed_sample_is_the_same_for_any_embedding():
    """Reference: the sample is a function of the id set and the seed only: two tables with
    different vectors and a different row order show the same query ids in the same order."""
    vectors, labels = clustered()
    ids = np.arange(1000, 1000 + len(labels))
    other_order = np.random.default_rng(5).permutation(len(ids))
    other = EmbeddingTable(ids[other_order], labels[other_order], clustered(seed=9)[0])
    first = ids[sample_query_positions(ids, 10, seed=3)]
    second = other.ids[sample_query_positions(other.ids, 10, seed=3)]
    np.testing.assert_array_equal(first, second)
    assert list(first) == sorted(first) and len(set(first)) == 10
    assert set(ids[sample_query_positions(ids, 10, seed=4)]) != set(first)
    assert len(sample_query_positions(ids, 10_000, seed=3)) == len(ids)  # more than exist: all of them

    search = exact_distance_searcher
    one = select_gallery(EmbeddingTable(ids, labels, vectors), search(vectors, "l2"), "l2", k=4, sample=6, worst=0, seed=3)
    two = select_gallery(other, search(other.vectors, "l2"), "l2", k=4, sample=6, worst=0, seed=3)
    np.testing.assert_array_equal(ids[one.queries], other.ids[two.queries])


def test_worst_queries_are_the_largest_first_correct_ranks():
    """Reference: brute-force first-correct ranks, queries sorted by (-rank, id), the sampled
    queries and those without a positive left out."""
    vectors, labels = clustered(noise=1.5)
    ids = np.random.default_rng(2).permutation(len(labels)) + 500
    ranks, _ = brute_force_ranks(vectors, labels, vectors, labels, "l2", same_set=True)
    sampled = sample_query_positions(ids, 5, seed=0)
    candidates = [i for i in range(len(ids)) if ranks[i] != NO_POSITIVE and i not in set(sampled)]
    expected = sorted(candidates, key=lambda i: (-ranks[i], ids[i]))[:6]
    np.testing.assert_array_equal(worst_query_positions(ranks, ids, 6, exclude=sampled), expected)

    table = EmbeddingTable(ids, labels, vectors)
    selection = select_gallery(table, exact_distance_searcher(vectors, "l2"), "l2", k=3, sample=5, worst=6, seed=0)
    assert selection.kinds == ["sample"] * 5 + ["worst"] * 6
    np.testing.assert_array_equal(selection.queries[5:], expected)
    np.testing.assert_array_equal(selection.first_correct, ranks[selection.queries])


def test_top_k_excludes_the_query_and_reports_distances():
    """Reference: brute-force float64 L2 distances sorted with ties by position, the query itself
    removed; the printed distance is the (not squared) L2 distance."""
    vectors, labels = clustered()
    rows = np.array([0, 5, 7, 40, len(labels) - 1])
    found = nearest(exact_distance_searcher(vectors, "l2"), vectors[rows], 5, "l2", own_positions=rows)
    for row, query in enumerate(rows):
        distances = np.sqrt(((vectors.astype(np.float64) - vectors[query]) ** 2).sum(1))
        order = np.lexsort((np.arange(len(vectors)), distances))
        order = order[order != query][:5]
        np.testing.assert_array_equal(found.positions[row], order)
        np.testing.assert_allclose(found.distances[row], distances[order], atol=1e-3)
    assert found.distances[1, 0] == pytest.approx(0.0, abs=1e-3)  # 5 is a copy of another image: found first


def test_first_correct_neighbour_shown_beyond_top_k(tmp_path):
    """Reference: for a query whose first correct neighbour ranks beyond k, the row carries it as
    an extra tile with the brute-force rank and distance."""
    vectors, labels = clustered(noise=1.5)
    ids = np.arange(len(labels))
    manifest = pa.table({"id": ids, "path": [f"{i}.png" for i in ids], "label": labels, "class_name": [f"c{v}" for v in labels]})
    catalogue = Catalogue.from_manifest(manifest, tmp_path)
    table = EmbeddingTable(ids, labels, vectors)
    selection = select_gallery(table, exact_distance_searcher(vectors, "l2"), "l2", k=2, sample=0, worst=3, seed=0)
    rows = selection_rows(selection, catalogue, ids)
    ranks, first = brute_force_ranks(vectors, labels, vectors, labels, "l2", same_set=True)
    query = selection.queries[0]
    assert ranks[query] > 2 and rows[0].extra is not None
    assert rows[0].extra.caption[:2] == (f"rank {ranks[query]}", f"c{labels[first[query]]}")
    assert float(rows[0].extra.caption[2]) == pytest.approx(np.linalg.norm(vectors[query] - vectors[first[query]]), abs=1e-3)
    assert all(tile.border == OTHER_CLASS for tile in rows[0].hits)


@pytest.mark.parametrize(("mode", "size"), [("L", (32, 32)), ("RGBA", (300, 100)), ("P", (40, 80)), ("I;16", (20, 20)), ("1", (64, 64))])
def test_thumbnails_of_any_mode_and_size(tmp_path, mode, size):
    """Reference: any PIL mode and aspect becomes a (px, px, 3) uint8 thumbnail, the long side
    filling it and the short side centred on white."""
    path = tmp_path / "image.png"
    Image.new(mode, size, 1 if mode in ("1", "P") else 0).save(path)
    thumb = load_thumbnail(path, 48)
    assert thumb.shape == (48, 48, 3) and thumb.dtype == np.uint8
    if size[0] > size[1]:  # wide: white bands above and below
        assert (thumb[0] == 255).all() and (thumb[24] != 255).any()


def test_draw_gallery_frames_hits_by_class(tmp_path):
    """Reference: the PNG holds the query row's thumbnails framed in the class colours (green for
    the same class, red for another), at the size the layout asks for, and no metadata."""
    for i, value in enumerate((30, 90, 150, 210)):
        Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ids = np.arange(4)
    labels = np.array([0, 0, 1, 1])
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    manifest = pa.table({"id": ids, "path": [f"{i}.png" for i in ids], "label": labels, "class_name": ["zero", "zero", "one", "one$"]})
    selection = select_gallery(EmbeddingTable(ids, labels, vectors), exact_distance_searcher(vectors, "l2"), "l2", k=3, sample=2, worst=0, seed=0)
    rows = selection_rows(selection, Catalogue.from_manifest(manifest, tmp_path), ids)
    assert [tile.border for tile in rows[0].hits] == [SAME_CLASS, OTHER_CLASS, OTHER_CLASS]
    out = tmp_path / "gallery.png"
    draw_gallery(rows, out, ["title", "second line"], thumb_px=32)
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(SAME_CLASS[i : i + 2], 16) for i in (1, 3, 5)), tuple(int(OTHER_CLASS[i : i + 2], 16) for i in (1, 3, 5))}
    present = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert colours <= present
    assert Image.open(out).text == {}  # no text chunk: no matplotlib version stamp in a DVC output
