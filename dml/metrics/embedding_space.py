"""The paper's embedding-space metrics: spectral decay rho and embedding density pi."""

from __future__ import annotations

import numpy as np


def singular_values(embeddings: np.ndarray) -> np.ndarray:
    """Singular values of the N x D embedding matrix, descending."""
    return np.linalg.svd(np.asarray(embeddings, dtype=np.float64), compute_uv=False)


def spectral_decay(embeddings: np.ndarray, skip_largest: int = 0) -> float:
    """rho(Phi) = KL(U || s): s are the singular values without the ``skip_largest`` largest,
    normalised to sum 1, U is uniform over them. Lower = flatter spectrum = more directions of
    significant variance."""
    s = singular_values(embeddings)[skip_largest:]
    s = s / s.sum()
    uniform = np.full_like(s, 1.0 / len(s))
    s = np.clip(s, 1e-12, None)  # a rank-deficient matrix has zero singular values
    return float(np.sum(uniform * np.log(uniform / s)))


def embedding_density(
    embeddings: np.ndarray, labels: np.ndarray, block_size: int = 2048, on_sphere: bool = True
) -> dict[str, float]:
    """pi_intra: mean pairwise distance within a class, averaged over classes with two or more
    members; pi_inter: mean pairwise distance between the L2-normalised class centres;
    pi_ratio = pi_intra / pi_inter. With ``on_sphere`` the embeddings are L2-normalised first, so
    pi_ratio compares like with like (unit centres against unit embeddings) also for losses
    trained on unnormalised embeddings (N-pair, angular, lifted); for normalised embeddings it
    changes nothing. Distances are computed in blocks, so 11k classes (SOP) never build an
    11k x 11k matrix."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if on_sphere:
        embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(np.asarray(labels)[order], return_index=True, return_counts=True)
    grouped = embeddings[order]
    centres = np.add.reduceat(grouped, starts, axis=0) / counts[:, None]
    intra = [
        _mean_pairwise(grouped[start:start + count], block_size)
        for start, count in zip(starts, counts)
        if count > 1
    ]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True).clip(1e-12)
    pi_intra = float(np.mean(intra))
    pi_inter = _mean_pairwise(centres, block_size)
    return {"pi_intra": pi_intra, "pi_inter": pi_inter, "pi_ratio": pi_intra / pi_inter}


def _mean_pairwise(x: np.ndarray, block_size: int) -> float:
    """Mean Euclidean distance over the unordered pairs of rows of x, block by block."""
    n = len(x)
    sq = (x * x).sum(1)
    total = 0.0
    for start in range(0, n, block_size):
        rows = slice(start, start + block_size)
        d = np.sqrt(np.clip(sq[rows, None] + sq[None, :] - 2 * x[rows] @ x.T, 0, None))
        # keep pairs (i, j) with j > i only
        upper = np.arange(n)[None, :] > np.arange(start, min(start + block_size, n))[:, None]
        total += float(d[upper].sum())
    return total / (n * (n - 1) / 2)
