"""Clustering quality: k-means (FAISS) with k = number of classes, scored by NMI and pair-counting
F1 (scikit-learn's contingency-table implementations)."""

from __future__ import annotations

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import pair_confusion_matrix


def kmeans_assign(vectors: np.ndarray, k: int, seed: int = 0, iters: int = 20) -> np.ndarray:
    """Cluster id of every vector after ``iters`` Lloyd iterations from a seeded random start
    (``faiss.Kmeans``, as pytorch-metric-learning's AccuracyCalculator runs it)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1)
    kmeans.train(vectors)
    _, assignment = kmeans.index.search(vectors, 1)
    return assignment[:, 0]


def pair_f1(labels: np.ndarray, clusters: np.ndarray) -> float:
    """F1 of the clustering over pairs of items: a pair is a true positive when both items share
    a cluster and a label; F1 = 2TP / (2TP + FP + FN)."""
    (_, false_pos), (false_neg, true_pos) = pair_confusion_matrix(labels, clusters)
    denominator = 2 * true_pos + false_pos + false_neg
    return float(2 * true_pos / denominator) if denominator else 1.0


def clustering_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    return {"nmi": float(normalized_mutual_info_score(labels, clusters)), "f1": pair_f1(labels, clusters)}


def cluster_and_score(vectors: np.ndarray, labels: np.ndarray, seed: int = 0, iters: int = 20) -> dict[str, float]:
    """k-means with k = number of distinct labels, then NMI and F1 of the clusters."""
    clusters = kmeans_assign(vectors, len(np.unique(labels)), seed=seed, iters=iters)
    return clustering_scores(labels, clusters)
