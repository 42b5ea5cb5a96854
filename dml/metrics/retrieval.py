"""Retrieval metrics from the ranked neighbour lists of one kNN search, accumulated block by block.

For a query with R relevant gallery items (same label; the query itself is not counted when the
queries are the gallery) and ranked hits ``rel_1, rel_2, ...`` (1 = same label):

- ``recall_at_{k}``: 1 if any of the first k is relevant (Recall@k of the DML literature).
- ``precision_at_1``: rel_1 (equals ``recall_at_1``).
- ``r_precision``: (1/R) sum_{i<=R} rel_i.
- ``map_at_r`` (Musgrave et al. 2020): (1/R) sum_{i<=R} P@i rel_i, P@i = (1/i) sum_{j<=i} rel_j.
- ``map_at_{K}``: (1/min(R, K)) sum_{i<=K} P@i rel_i (mAP@1000 of Roth et al.; for R <= K it is
  pytorch-metric-learning's ``mean_average_precision`` with k = K).

Each metric is the mean over queries with R > 0. Queries whose label has no other member in the
gallery cannot retrieve anything relevant; like pytorch-metric-learning's AccuracyCalculator we
leave them out of every retrieval metric and report how many there were.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def relevant_counts(query_labels: np.ndarray, gallery_labels: np.ndarray, same_set: bool) -> np.ndarray:
    """R for every query: gallery items with its label, minus the query itself when ``same_set``."""
    classes, counts = np.unique(gallery_labels, return_counts=True)
    pos = np.searchsorted(classes, query_labels).clip(max=len(classes) - 1)
    found = classes[pos] == query_labels
    return np.where(found, counts[pos], 0) - int(same_set)


def neighbours_needed(relevant: np.ndarray, recall_at: Sequence[int], map_at: Sequence[int], gallery_size: int) -> int:
    """Width of the one search that serves every metric: max(k of Recall@k, K of mAP@K, largest
    R), capped at the number of candidates a query has."""
    return max(1, min(max([*recall_at, *map_at, int(relevant.max(initial=0))]), gallery_size))


def metric_names(recall_at: Sequence[int], map_at: Sequence[int]) -> list[str]:
    """The keys of :meth:`RetrievalScores.result`, in order."""
    return ([f"recall_at_{k}" for k in recall_at] + ["precision_at_1", "r_precision", "map_at_r"]
            + [f"map_at_{k}" for k in map_at])


class RetrievalScores:
    """Sums of per-query scores over blocks of neighbour lists; ``result()`` averages them."""

    def __init__(self, recall_at: Sequence[int], map_at: Sequence[int] = ()) -> None:
        self.recall_at = tuple(recall_at)
        self.map_at = tuple(map_at)
        self.sums = dict.fromkeys(metric_names(self.recall_at, self.map_at), 0.0)
        self.scored = 0
        self.without_positive = 0

    def add(self, hits: np.ndarray, relevant: np.ndarray) -> None:
        """``hits``: (queries x k) bool, neighbour i of query q has q's label (False for a missing
        neighbour); ``relevant``: R per query. k must be at least the largest R."""
        keep = relevant > 0
        self.without_positive += int((~keep).sum())
        hits, r = hits[keep], relevant[keep]
        if not len(r):
            return
        width = hits.shape[1]
        if r.max() > width:
            raise ValueError(f"R-based metrics need {r.max()} neighbours per query, got {width}")
        self.scored += len(r)
        no_hit = np.iinfo(np.int64).max  # beyond every k, also k wider than the neighbour list
        first_hit = np.where(hits.any(1), hits.argmax(1), no_hit)
        for k in self.recall_at:
            self.sums[f"recall_at_{k}"] += float((first_hit < k).sum())
        self.sums["precision_at_1"] += float(hits[:, 0].sum())
        positions = np.arange(1, width + 1)
        found = np.cumsum(hits, axis=1)
        # precision@i at the relevant positions, zero elsewhere
        precision_at_hits = np.where(hits, found / positions, 0.0)
        within_r = positions[None, :] <= r[:, None]
        self.sums["r_precision"] += float((found[np.arange(len(r)), r - 1] / r).sum())
        self.sums["map_at_r"] += float(((precision_at_hits * within_r).sum(1) / r).sum())
        for k in self.map_at:
            self.sums[f"map_at_{k}"] += float((precision_at_hits[:, :k].sum(1) / np.minimum(r, k)).sum())

    def result(self) -> dict[str, float]:
        return {name: total / self.scored if self.scored else 0.0 for name, total in self.sums.items()}


def retrieval_scores(
    neighbour_labels: np.ndarray,
    query_labels: np.ndarray,
    relevant: np.ndarray,
    recall_at: Sequence[int],
    map_at: Sequence[int] = (),
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """All retrieval metrics of one (queries x k) array of neighbour labels; ``valid`` marks
    neighbours that exist (an approximate index may return fewer than k)."""
    hits = neighbour_labels == np.asarray(query_labels)[:, None]
    if valid is not None:
        hits &= valid
    scores = RetrievalScores(recall_at, map_at)
    scores.add(hits, relevant)
    return scores.result()
