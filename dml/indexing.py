"""FAISS indexes over embedding tables (the index stage grows ANN types here)."""

from __future__ import annotations

import faiss
import numpy as np


def flat_index(vectors: np.ndarray, metric: str = "ip") -> faiss.Index:
    """Exact FAISS index; for L2-normalised vectors inner product and L2 rank identically."""
    index = faiss.IndexFlatIP(vectors.shape[1]) if metric == "ip" else faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index
