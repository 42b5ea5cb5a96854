"""Clustering quality: k-means (FAISS) with k = number of classes, scored by NMI (scikit-learn)."""

from __future__ import annotations

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score


def kmeans_assign(vectors: np.ndarray, k: int, seed: int = 0, iters: int = 20) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1)
    kmeans.train(vectors)
    _, assignment = kmeans.index.search(vectors, 1)
    return assignment[:, 0]


def nmi(vectors: np.ndarray, labels: np.ndarray, seed: int = 0, iters: int = 20) -> float:
    clusters = kmeans_assign(vectors, len(np.unique(labels)), seed=seed, iters=iters)
    return float(normalized_mutual_info_score(labels, clusters))
