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


def embedding_density(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """pi_intra: mean pairwise distance within a class, averaged over classes; pi_inter: mean
    pairwise distance between the L2-normalised class centres; pi_ratio = pi_intra / pi_inter."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    classes = np.unique(labels)
    intra = []
    centres = []
    for c in classes:
        members = embeddings[labels == c]
        centres.append(members.mean(0))
        if len(members) > 1:
            d = _pairwise(members)
            intra.append(d[np.triu_indices(len(members), 1)].mean())
    centres_arr = np.stack(centres)
    centres_arr /= np.linalg.norm(centres_arr, axis=1, keepdims=True).clip(1e-12)
    inter = _pairwise(centres_arr)[np.triu_indices(len(classes), 1)].mean()
    pi_intra = float(np.mean(intra))
    return {"pi_intra": pi_intra, "pi_inter": float(inter), "pi_ratio": pi_intra / float(inter)}


def _pairwise(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)
    return np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None))
