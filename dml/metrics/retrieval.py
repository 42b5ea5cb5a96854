"""Retrieval metrics computed from one exact kNN search (FAISS).

Protocol (Roth et al.; Musgrave et al. 2020): every test image is a query against all the other
test images; the query itself is excluded *by index*, not by distance, so exact duplicates of
a query still count as neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np


def knn_excluding_self(index: faiss.Index, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices (into the indexed set, which *is* the query set) of the k nearest neighbours of
    every query, with the query itself removed. Searches k + 1 and drops the self hit, or the
    last hit when the query is not among the first k + 1 (more than k exact duplicates)."""
    n = queries.shape[0]
    k = min(k, n - 1)
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k + 1)
    is_self = found == np.arange(n)[:, None]
    # Keep the first k entries that are not the query itself.
    drop = np.where(is_self.any(1), is_self.argmax(1), k)
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(n), drop] = False
    return found[keep].reshape(n, k)


def recall_at_k(neighbor_labels: np.ndarray, labels: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of queries with at least one same-class image among their k nearest neighbours."""
    hits = neighbor_labels == labels[:, None]
    first_hit = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)
    return {k: float((first_hit < k).mean()) for k in ks}


def map_at_r(neighbor_labels: np.ndarray, labels: np.ndarray) -> float:
    """MAP@R: for a query with R other same-class images, the mean over positions i <= R of
    precision@i at the relevant positions, divided by R. Queries with R = 0 are skipped (they
    cannot retrieve anything relevant), as in pytorch-metric-learning."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r = counts[inverse] - 1
    if neighbor_labels.shape[1] < r.max(initial=0):
        raise ValueError(f"map_at_r needs {r.max()} neighbours per query, got {neighbor_labels.shape[1]}")
    valid = r > 0
    width = int(r.max(initial=0))
    relevant = (neighbor_labels[valid, :width] == labels[valid, None]).astype(np.float64)
    positions = np.arange(1, width + 1)
    within_r = positions[None, :] <= r[valid, None]
    relevant *= within_r
    precision = np.cumsum(relevant, axis=1) / positions[None, :]
    return float(((precision * relevant).sum(1) / r[valid]).mean()) if valid.any() else 0.0


def neighbours_needed(labels: np.ndarray, ks: Sequence[int]) -> int:
    """Neighbours one search must return for Recall@max(ks) and MAP@R."""
    largest_class = int(np.unique(labels, return_counts=True)[1].max())
    return max(max(ks), largest_class - 1)
