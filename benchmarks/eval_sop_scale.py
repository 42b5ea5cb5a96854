"""Evaluation at Stanford-Online-Products scale: our evaluator vs pytorch-metric-learning's
AccuracyCalculator vs the bare FAISS calls the work needs, measured in one run.

SOP's test split has 60,502 images in 11,316 classes of 2-12 images each. The data here is
synthetic and of that shape: L2-normalised embeddings in clusters (class centres random on the
unit sphere, members = normalise(centre + noise)), class sizes 2 + Poisson(3.3) capped at 12
(mean ~5.3, most classes small), shuffled, all deterministic from ``--seed``. The default noise
gives a Recall@1 in the range of real SOP models (~0.6-0.8).

All three compute P@1, R-precision, MAP@R (self-retrieval, k = largest class - 1) and NMI
(k-means with k = number of classes, 20 iterations, FAISS seed 1234) with the same metric:

1. ours: ``dml.evaluation.evaluate_embeddings`` (also computes clustering F1);
2. PML: ``AccuracyCalculator(k="max_bin_count", device=cpu).get_accuracy(x, labels)``;
3. the floor: ``faiss.knn(x, x, k + 1)`` plus ``faiss.Kmeans(...).train(x)`` and one
   ``kmeans.index.search(x, 1)`` -- the FAISS work alone, no metric arithmetic.

Each is timed with time.perf_counter, best of ``--repeats`` rounds (each round runs all, in
rotated order, so that a drift of the machine's speed hits all). Printed: the times, ours' own
breakdown, PML/ours ("speedup vs AccuracyCalculator", target >= 5), ours/floor ("overhead vs
bare FAISS", target <= 1.5), both sides' metric values and their differences (targets: < 1e-6
for P@1, R-precision and MAP@R, <= 0.005 for NMI), and the peak RSS of the process. The exit
code is 0 whatever the outcome: this is a measurement.

Usage: ``python benchmarks/eval_sop_scale.py [--classes 11316] [--dim 128] [--metric l2]
[--repeats 1] [--breakdown]``
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dml.evaluation import Evaluation, evaluate_embeddings  # noqa: E402
from dml.indexing import FAISS_METRICS  # noqa: E402
from dml.retrieval_config import EvalConfig  # noqa: E402

KMEANS_SEED, KMEANS_ITERS = 1234, 20  # faiss.Kmeans' default seed, which PML's FaissKMeans(niter=20) uses
# (ours, PML) names of the metrics both compute, with the largest accepted |difference|
SHARED = {
    "P@1": ("precision_at_1", "precision_at_1", 1e-6),
    "R-precision": ("r_precision", "r_precision", 1e-6),
    "MAP@R": ("map_at_r", "mean_average_precision_at_r", 1e-6),
    "NMI": ("nmi", "NMI", 0.005),
}
PML_KNN_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def make_embeddings(classes: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SOP-shaped clustered embeddings: ``noise`` is the expected norm of the noise vector added
    to each unit-norm class centre (per coordinate sigma = noise / sqrt(dim))."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(2 + rng.poisson(3.3, classes), 12)
    centres = rng.standard_normal((classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), sizes)
    x = centres[labels] + rng.standard_normal((len(labels), dim)) * (noise / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(labels))
    return np.ascontiguousarray(x[order], dtype=np.float32), labels[order]


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def run_ours(x: np.ndarray, labels: np.ndarray, metric: str) -> Evaluation:
    cfg = EvalConfig(recall_at=(1,), map_at=(), kmeans_seed=KMEANS_SEED, kmeans_iters=KMEANS_ITERS)
    return evaluate_embeddings(x, labels, cfg=cfg, metric=metric)


def run_floor(x: np.ndarray, k: int, classes: int, metric: str) -> dict[str, float]:
    """The FAISS calls alone (``k`` neighbours besides the query itself, ``classes`` centroids);
    returns their seconds."""
    started = time.perf_counter()
    faiss.knn(x, x, k + 1, metric=FAISS_METRICS[metric])
    knn = time.perf_counter() - started
    kmeans = faiss.Kmeans(x.shape[1], classes, niter=KMEANS_ITERS, seed=KMEANS_SEED, min_points_per_centroid=1)
    kmeans.train(x)
    kmeans.index.search(x, 1)
    return {"knn": knn, "kmeans": time.perf_counter() - started - knn}


def pml_runs(x: np.ndarray, labels: np.ndarray, metric: str, breakdown: bool) -> dict[str, Callable[[], dict]]:
    """AccuracyCalculator calls: all four metrics; with ``breakdown`` also its kNN metrics alone
    and its NMI alone. (PML's FaissKMeans leaves min_points_per_centroid at FAISS's default, hence
    FAISS's "please provide at least ... training points" warning on stderr.)"""
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    knn_func = FaissKNN(index_init_fn=faiss.IndexFlatIP) if metric == "ip" else None  # None: IndexFlatL2
    calculator = AccuracyCalculator(include=(*PML_KNN_METRICS, "NMI"), k="max_bin_count",
                                    device=torch.device("cpu"), knn_func=knn_func)
    runs = {"PML": lambda: calculator.get_accuracy(x, labels)}
    if breakdown:
        runs["PML knn metrics"] = lambda: calculator.get_accuracy(x, labels, include=PML_KNN_METRICS)
        runs["PML NMI"] = lambda: calculator.get_accuracy(x, labels, include=("NMI",))
    return runs


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=11316, help="number of classes (SOP test: 11316)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--noise", type=float, default=1.45,
                        help="expected norm of the noise added to each unit centre (1.45: P@1 ~0.69 at 11316 classes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metric", choices=sorted(FAISS_METRICS), default="l2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--breakdown", action="store_true", help="also time PML's kNN metrics and its NMI separately")
    args = parser.parse_args()

    x, labels = make_embeddings(args.classes, args.dim, args.noise, args.seed)
    sizes = np.bincount(labels)
    print(f"data: n={len(x)}, classes={len(sizes)} (sizes {sizes.min()}-{sizes.max()}, mean {sizes.mean():.2f}), "
          f"dim={args.dim}, noise={args.noise}, seed={args.seed}, metric={args.metric}, "
          f"threads={faiss.omp_get_max_threads()}, repeats={args.repeats}")
    faiss.knn(x[:256], x[:256], 2)  # warm-up (OpenMP pool, BLAS), not counted

    k = int(sizes.max()) - 1  # the largest R: the search width R-precision and MAP@R need
    runs = {"floor": lambda: run_floor(x, k, len(sizes), args.metric), "ours": lambda: run_ours(x, labels, args.metric),
            **pml_runs(x, labels, args.metric, args.breakdown)}
    best: dict[str, tuple[float, Any]] = {}  # name -> (seconds, result) of its fastest run
    for repeat in range(args.repeats):
        names = list(runs)
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:  # rotate: drift hits all
            seconds, result = timed(runs[name])
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, result)
    (floor_s, floor), (ours_s, ours), (pml_s, pml) = best["floor"], best["ours"], best["PML"]
    pml_parts = {name[4:]: best[name][0] for name in ("PML knn metrics", "PML NMI") if name in best}

    print(f"bare FAISS floor       : {floor_s:8.2f} s  ({', '.join(f'{k} {v:.2f} s' for k, v in floor.items())})")
    print(f"ours                   : {ours_s:8.2f} s  ({', '.join(f'{k} {v:.2f} s' for k, v in ours.seconds.items())}; "
          f"k={ours.neighbours})")
    print(f"PML AccuracyCalculator : {pml_s:8.2f} s" +
          (f"  (separately: {', '.join(f'{k} {v:.2f} s' for k, v in pml_parts.items())})" if pml_parts else ""))
    speedup, overhead = pml_s / ours_s, ours_s / floor_s
    print(f"speedup vs AccuracyCalculator (PML/ours): {speedup:.2f}x")
    print(f"overhead vs bare FAISS (ours/floor)     : {overhead:.2f}x")

    print(f"{'metric':<12} {'ours':>10} {'PML':>10} {'|diff|':>10}")
    diffs = {}
    for name, (ours_key, pml_key, _) in SHARED.items():
        a, b = ours.metrics[ours_key], float(pml[pml_key])
        diffs[name] = abs(a - b)
        print(f"{name:<12} {a:10.6f} {b:10.6f} {diffs[name]:10.2e}")
    print(f"max |diff| of the retrieval metrics: {max(diffs[n] for n in ('P@1', 'R-precision', 'MAP@R')):.2e}")

    print(f"{verdict(speedup >= 5)}  speedup vs AccuracyCalculator >= 5 ({speedup:.2f}x)")
    for name, (_, _, tolerance) in SHARED.items():
        ok = diffs[name] <= tolerance if name == "NMI" else diffs[name] < tolerance
        print(f"{verdict(ok)}  {name} |diff| {'<=' if name == 'NMI' else '<'} {tolerance:g} ({diffs[name]:.2e})")
    print(f"{verdict(overhead <= 1.5)}  overhead vs bare FAISS <= 1.5 ({overhead:.2f}x)")
    # ru_maxrss is in KiB on Linux
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
