"""Embedded samplers: batches chosen from the current embeddings of the training set
(``EmbeddingStorage``), after Roth et al. 2020's greedy coreset, D2 coreset, distance-distribution
matching (DDM) and Frechet-distance batch matching (FRD).

Each batch is chosen when the loader asks for it, from the storage as updated by the batches
before it, or, with ``delay`` d, before it minus d (a DataLoader with workers chooses batches
ahead; the paper code's 8 workers x 2 prefetched batches make its samplers read embeddings 16
batches old).
Selection runs in torch on the storage's device, with one distance computation per pool; index
draws come from the epoch's numpy stream and the rest from a torch generator seeded from it, so
an epoch is reproducible from (seed, epoch) and the storage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from dml.samplers.basic import ClassMembers
from dml.samplers.config import BatchMatchKnobs, D2CoresetKnobs, DDMKnobs, EmbeddedSamplerKnobs
from dml.samplers.storage import EmbeddingStorage


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(len(x), len(y)) squared Euclidean distances (one matmul; round-off below 0 clipped)."""
    return (x.square().sum(1)[:, None] + y.square().sum(1)[None, :] - 2 * x @ y.T).clamp_min(0)


class EmbeddedSampler:
    """``len(labels) // batch_size`` batches per epoch, each chosen by :meth:`choose` from the
    storage when it is requested."""

    def __init__(self, labels: np.ndarray, batch_size: int, storage: EmbeddingStorage, knobs: EmbeddedSamplerKnobs) -> None:
        if batch_size % knobs.samples_per_class:
            raise ValueError(f"train.batch_size {batch_size} is not a multiple of samples_per_class {knobs.samples_per_class}")
        self.labels = np.asarray(labels)
        if len(self.labels) != len(storage.embeddings):
            raise ValueError(f"{len(self.labels)} labels but {len(storage.embeddings)} storage rows")
        self.batch_size = batch_size
        self.samples_per_class = knobs.samples_per_class
        self.pool_size = knobs.pool_size
        self.knobs = knobs
        self.storage = storage
        self.members = ClassMembers(self.labels)

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        generator = torch.Generator(device=self.storage.device).manual_seed(int(rng.integers(2**63 - 1)))
        for step in range(len(self)):
            self.storage.catch_up(step)
            yield self.choose(rng, generator)

    def choose(self, rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
        raise NotImplementedError


class CoresetSampler(EmbeddedSampler):
    """``batch_size / n`` images picked from a random pool of ``pool_size`` storage rows by
    :meth:`select`, each with ``n - 1`` other random images of its class.

    Deviations from the paper code, which draws the pool twice (once to pick from, once, a
    different draw, to map the picks to dataset indices, so its batches are effectively random)
    and adds fillers drawn with replacement from the whole class (possibly the picked image
    itself): here the picks are mapped through the very pool they were picked from, and the
    fillers are other images of the class (repeats only when the class is smaller than n; two
    picks of one class, which the rules allow, may share a filler).
    """

    def choose(self, rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
        pool = rng.choice(len(self.labels), size=min(self.pool_size, len(self.labels)), replace=False)
        picked = self.select(self.storage.rows(pool), self.batch_size // self.samples_per_class, rng, generator)
        picks = pool[picked.cpu().numpy()]
        return self.members.without_replacement(self.members.class_of[picks], self.samples_per_class, rng, first=picks).ravel()

    def select(self, pool: torch.Tensor, k: int, rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:
        """Positions of ``k`` distinct pool rows."""
        raise NotImplementedError


def greedy_k_center(sq_dist: torch.Tensor, k: int, start: int) -> torch.Tensor:
    """k-center greedy (Sener & Savarese 2018): from ``start``, repeatedly the point whose
    distance to the nearest chosen point is largest. Stays on the device (no sync per step)."""
    picks = torch.empty(k, dtype=torch.long, device=sq_dist.device)
    picks[0] = start
    to_chosen = sq_dist[start].clone()
    for step in range(1, k):
        farthest = torch.argmax(to_chosen)
        picks[step] = farthest
        to_chosen = torch.minimum(to_chosen, sq_dist[farthest])
    return picks


class GreedyCoresetSampler(CoresetSampler):
    """Greedy coreset: k-center greedy on the pool's exact squared distances from a random start
    (the paper code's rule; its initial row norms of the distance matrix are a no-op, as any
    point's distance to the start is below its row norm)."""

    def select(self, pool: torch.Tensor, k: int, rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:
        return greedy_k_center(squared_distances(pool, pool), k, int(rng.integers(len(pool))))


def gaussian_fit(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Cholesky factor of the sample covariance (float64, ddof 1 like ``np.cov``), with
    a jitter of 1e-6 of the mean variance: embeddings of a pool are often nearly degenerate, and
    the paper code's ``multivariate_normal.pdf`` then fails on a singular covariance."""
    points = points.double()
    mean = points.mean(0)
    centred = points - mean
    cov = centred.T @ centred / (len(points) - 1)
    jitter = 1e-6 * cov.diagonal().mean() + 1e-12
    return mean, torch.linalg.cholesky(cov + jitter * torch.eye(len(cov), dtype=cov.dtype, device=cov.device))


def gaussian_log_density(points: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, L L^T) of every row (log space: densities of 128-d points underflow)."""
    solved = torch.linalg.solve_triangular(chol, (points.double() - mean).T, upper=False)
    mahalanobis = solved.square().sum(0)
    log_det = 2 * chol.diagonal().log().sum()
    return -0.5 * (mahalanobis + log_det + len(mean) * math.log(2 * math.pi))


def d2_probabilities(log_density: torch.Tensor, sum_sq_dist: torch.Tensor, chosen: torch.Tensor, exponent: float) -> torch.Tensor:
    """p(x) proportional to N(x; mu, Sigma) * (sum of squared distances to the chosen points)^lambda,
    zero for chosen points. A point at distance 0 from all picks gets a vanishing (not NaN) weight."""
    tiny = torch.finfo(sum_sq_dist.dtype).tiny
    logits = log_density + exponent * sum_sq_dist.clamp_min(tiny).log()
    return torch.softmax(logits.masked_fill(chosen, -math.inf), dim=0)


class D2CoresetSampler(CoresetSampler):
    """D2 coreset: start at the pool point nearest a draw from a Gaussian fit of the pool, then
    draw each next point with :func:`d2_probabilities` (the paper code's rule, computed in log
    space and with a jittered covariance so it neither underflows nor fails on singular fits)."""

    knobs: D2CoresetKnobs

    def select(self, pool: torch.Tensor, k: int, rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:
        mean, chol = gaussian_fit(pool)
        log_density = gaussian_log_density(pool, mean, chol)
        draw = mean + chol @ torch.randn(len(mean), generator=generator, device=pool.device, dtype=mean.dtype)
        sq_dist = squared_distances(pool, pool).double()
        picks = torch.empty(k, dtype=torch.long, device=pool.device)
        picks[0] = torch.argmin((pool.double() - draw).square().sum(1))
        chosen = torch.zeros(len(pool), dtype=torch.bool, device=pool.device)
        sum_sq_dist = torch.zeros(len(pool), dtype=sq_dist.dtype, device=pool.device)
        for step in range(1, k):
            chosen[picks[step - 1]] = True
            sum_sq_dist += sq_dist[picks[step - 1]]
            weights = d2_probabilities(log_density, sum_sq_dist, chosen, self.knobs.distance_exponent)
            picks[step] = torch.multinomial(weights, 1, generator=generator)[0]
        return picks


class BatchMatchSampler(EmbeddedSampler):
    """Of ``candidates`` SPC batches drawn from an SPC reference batch, the one whose embeddings'
    distribution is closest (:meth:`costs`) to the reference's.

    The reference batch is ``pool_size / n`` classes (distinct while the training set has enough)
    with n distinct images each (repeats only for classes smaller than n); a candidate is
    ``batch_size / n`` distinct class groups of it. The paper code draws the reference's classes
    and images with replacement and each candidate's classes with replacement among the
    reference's, so its batches can hold one class twice and an image twice.
    """

    knobs: BatchMatchKnobs

    def draw_candidates(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The reference batch's dataset indices (pool_size // n * n,) and each candidate's rows
        in it (candidates x batch_size)."""
        n = self.samples_per_class
        groups = self.pool_size // n
        classes = rng.choice(self.members.num_classes, size=groups, replace=groups > self.members.num_classes)
        reference = self.members.without_replacement(classes, n, rng).ravel()
        chosen_groups = np.argsort(rng.random((self.knobs.candidates, groups)), axis=1)[:, : self.batch_size // n]
        rows = (chosen_groups[:, :, None] * n + np.arange(n)).reshape(self.knobs.candidates, self.batch_size)
        return reference, rows

    def choose(self, rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
        reference, rows = self.draw_candidates(rng)
        costs = self.costs(self.storage.rows(reference), torch.from_numpy(rows).to(self.storage.device))
        return reference[rows[int(torch.argmin(costs))]]

    def costs(self, reference: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(candidates,) distance of each candidate's distribution to the reference's."""
        raise NotImplementedError


def distance_histograms(
    sq_dist: torch.Tensor, rows: torch.Tensor, bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised histograms of pairwise distances: of the whole reference (bins,) and of each
    candidate's pairs (candidates x bins), over ``bins`` equal bins spanning the reference's
    distances (``np.histogram(d, bins, range=(min, max))``), and the bin centres. Every
    candidate pair is a reference pair, so its bin is looked up, not recomputed."""
    dist = sq_dist.sqrt()
    upper = torch.triu_indices(len(dist), len(dist), 1, device=dist.device)
    values = dist[upper[0], upper[1]]
    low, high = values.min(), values.max()
    width = (high - low).clamp_min(torch.finfo(dist.dtype).tiny) / bins
    bin_of = ((dist - low) / width).long().clamp_(0, bins - 1)
    reference = torch.bincount(bin_of[upper[0], upper[1]], minlength=bins).to(dist.dtype)
    pair = torch.triu_indices(rows.shape[1], rows.shape[1], 1, device=dist.device)
    candidate_bins = bin_of[rows[:, pair[0]], rows[:, pair[1]]]
    candidates = torch.zeros(len(rows), bins, dtype=dist.dtype, device=dist.device)
    candidates.scatter_add_(1, candidate_bins, torch.ones_like(candidate_bins, dtype=dist.dtype))
    centres = low + width * (torch.arange(bins, device=dist.device, dtype=dist.dtype) + 0.5)
    return reference / reference.sum(), candidates / candidates.sum(1, keepdim=True), centres


def wasserstein_on_bins(p: torch.Tensor, q: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """W1 between distributions with masses ``p`` and ``q`` (..., bins) on the sorted ``positions``:
    the area between their CDFs (``scipy.stats.wasserstein_distance(positions, positions, p, q)``)."""
    cdf_gap = torch.cumsum(p - q, dim=-1)[..., :-1].abs()
    return (cdf_gap * positions.diff()).sum(-1)


class DDMSampler(BatchMatchSampler):
    """Distance-distribution matching: cost = ||mean gap|| + ||std gap|| + w * W1(h_reference,
    h_candidate), h the normalised pairwise-distance histograms. The paper code passes the
    histogram *heights* to ``wasserstein_distance`` as if they were samples, which compares the
    sets of bar heights and ignores where the bars are; here W1 is computed between the two
    distributions on the bin positions (the method as described). Its weight keeps the code's
    75 x (W(a,b) + W(b,a)) = 150 W, though W is now in distance units, not in probability mass."""

    knobs: DDMKnobs

    def costs(self, reference: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return ddm_costs(reference, rows, self.knobs.bins, self.knobs.wasserstein_weight)


def ddm_costs(reference: torch.Tensor, rows: torch.Tensor, bins: int, wasserstein_weight: float) -> torch.Tensor:
    """(candidates,) DDM cost of each candidate (rows of ``reference``); std with ddof 0 (``np.std``)."""
    reference_hist, candidate_hist, centres = distance_histograms(squared_distances(reference, reference), rows, bins)
    candidates = reference[rows]
    mean_gap = (candidates.mean(1) - reference.mean(0)).norm(dim=-1)
    std_gap = (candidates.std(1, correction=0) - reference.std(0, correction=0)).norm(dim=-1)
    return mean_gap + std_gap + wasserstein_weight * wasserstein_on_bins(reference_hist, candidate_hist, centres)


def frechet_distances(reference: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(candidates,) Frechet distance ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2) between
    the Gaussian fit (covariance with ddof 1) of ``reference`` (R x D) and of each candidate
    (candidates x b x D), in float64.

    Tr sqrt(S1 S2) is the nuclear norm of X S1^(1/2) / sqrt(b - 1), X a candidate's centred rows
    (its singular values squared are the eigenvalues of X S1 X^T / (b - 1), which are those of
    S1 S2): one eigendecomposition of S1 and a batched SVD, no matrix square root of a
    non-symmetric product and no jitter (the paper code: ``scipy.linalg.sqrtm`` per candidate,
    1e-8 added to both covariances)."""
    reference, candidates = reference.double(), candidates.double()
    mean1 = reference.mean(0)
    centred1 = reference - mean1
    cov1 = centred1.T @ centred1 / (len(reference) - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov1)
    sqrt_cov1 = eigenvectors * eigenvalues.clamp_min(0).sqrt()  # S1 = sqrt_cov1 @ sqrt_cov1.T
    mean2 = candidates.mean(1)
    centred2 = candidates - mean2[:, None]
    scale = candidates.shape[1] - 1
    trace_sqrt = torch.linalg.svdvals(centred2 @ sqrt_cov1).sum(-1) / math.sqrt(scale)
    trace2 = centred2.square().sum((1, 2)) / scale
    return (mean1 - mean2).square().sum(-1) + cov1.trace() + trace2 - 2 * trace_sqrt


class FRDSampler(BatchMatchSampler):
    """Frechet-distance batch matching: cost = :func:`frechet_distances` to the reference batch."""

    def costs(self, reference: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return frechet_distances(reference, reference[rows])
