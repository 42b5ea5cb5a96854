"""Cost of the embedded samplers (greedy_coreset, d2_coreset, ddm, frd).

(a) Selection cost at SOP scale: a storage of 59,551 x 128 L2-normalised embeddings over 11,318
    classes, the default knobs (512-row pool / reference batch, 10 candidate batches, 2 images
    per class) and batch size 112: milliseconds per batch, and per epoch (59,551 // 112 batches).
    Selection only (no training step); the storage is random, which changes nothing in the work done.
(b) Epoch time of each embedded sampler relative to ``class_balanced`` on the default glyph data
    (``data/preprocessed``; random images of the same shape when absent), one epoch of the
    default params, *including* the initial embedding pass over the training set. Runs alternate
    in order (A B C ..., then ... C B A) so that drifts of the machine's speed hit every sampler;
    the ratio of median epoch times is printed (target <= 1.25x), and the same ratio for the
    default run's ``train.epochs``, over which the initial pass is paid once.

Torch's thread pool makes the many small operations of selection very slow on a busy machine
(2 threads on 2 cores shared with another job: 30x slower than 1 thread); ``--threads`` sets
the torch threads of both parts (and ``train.num_threads``).

Usage: ``python benchmarks/sampler_cost.py [--part a|b] [--repeats 3] [--batches 50] [--device cpu] [--threads N]``;
``--quick`` checks that everything runs (few batches, a 40-class subset, one repeat).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dml.config import Params, load_params  # noqa: E402
from dml.data.loading import ArraySplit, load_split  # noqa: E402
from dml.data.stats import Stats, load_stats  # noqa: E402
from dml.paths import PREPROCESSED  # noqa: E402
from dml.samplers.config import SamplerSection  # noqa: E402
from dml.samplers.registry import EMBEDDED_SAMPLERS  # noqa: E402
from dml.samplers.storage import EmbeddingStorage  # noqa: E402
from dml.training.metric import build_training, train  # noqa: E402
from dml.training.monitoring import embed_pass  # noqa: E402

SOP_IMAGES, SOP_CLASSES, SOP_DIM, SOP_BATCH = 59_551, 11_318, 128, 112


def selection_cost(name: str, batches: int, device: torch.device) -> float:
    """Milliseconds to choose one batch at SOP scale (median over ``batches``, after 2 warm-up)."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(SOP_IMAGES) % SOP_CLASSES)
    storage = EmbeddingStorage(SOP_IMAGES, SOP_DIM, device)
    random = torch.randn(SOP_IMAGES, SOP_DIM, generator=torch.Generator().manual_seed(0))
    storage.embeddings = torch.nn.functional.normalize(random, dim=1).to(device)
    sampler = EMBEDDED_SAMPLERS[name](labels, SOP_BATCH, storage, SamplerSection(name=name).knobs)
    chosen = sampler.epoch(rng)
    for _ in range(2):
        next(chosen)
    times = []
    for _ in range(batches):
        started = time.perf_counter()
        next(chosen)  # returns numpy indices: the device work is finished
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def load_data(quick: bool) -> tuple[ArraySplit, Stats]:
    if (ROOT / PREPROCESSED / "stats.json").is_file():
        split, stats = load_split(ROOT / PREPROCESSED, "train"), load_stats(ROOT / PREPROCESSED)
    else:
        print("no preprocessed data (run `python -m dvc repro preprocess`): using random images of the default shape")
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(281), 40)
        images = rng.integers(0, 256, (len(labels), 1, 32, 32), dtype=np.uint8)
        split, stats = ArraySplit(images, labels, np.arange(len(labels))), Stats([128.0], [64.0], 1, "random")
    if quick:
        keep = np.isin(split.labels, np.unique(split.labels)[:40])
        split = ArraySplit(np.asarray(split.images)[keep], split.labels[keep], split.ids[keep])
    return split, stats


def with_sampler(base: Params, name: str, threads: int) -> Params:
    raw = base.model_dump()
    raw["sampler"]["name"] = name
    raw["train"].update(epochs=1, track_test_recall=False, num_threads=threads)
    return Params.model_validate(raw)


def epoch_seconds(params: Params, split: ArraySplit, stats: Stats) -> float:
    """One epoch of the train stage's loop; for an embedded sampler it includes the initial pass."""
    return train(params, split, stats, progress=False).curve[0].seconds


def storage_pass_seconds(params: Params, split: ArraySplit, stats: Stats) -> float:
    setup = build_training(params, split, stats)
    started = time.perf_counter()
    setup.storage.refresh(torch.from_numpy(embed_pass(setup.model, split, params, setup.storage.batch_size)))
    return time.perf_counter() - started


def epoch_ratios(embedded: list[str], args: argparse.Namespace) -> None:
    base = load_params(ROOT / "params.yaml")
    split, stats = load_data(args.quick)
    names = ["class_balanced", *embedded]
    params = {name: with_sampler(base, name, args.threads) for name in names}
    print(f"(b) one epoch on {len(split)} training images ({len(np.unique(split.labels))} classes), "
          f"batch {base.train.batch_size}, {args.repeats} repeat(s), alternating order")
    epoch_seconds(params["class_balanced"], split, stats)  # warm-up (allocator, thread pool), not counted
    times: dict[str, list[float]] = {name: [] for name in names}
    passes = []
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            times[name].append(epoch_seconds(params[name], split, stats))
        passes.append(storage_pass_seconds(params[embedded[0]], split, stats))
    baseline = statistics.median(times["class_balanced"])
    print(f"  {'class_balanced':15s} {baseline:7.2f} s  (runs: {', '.join(f'{s:.2f}' for s in times['class_balanced'])})")
    storage_pass = statistics.median(passes)
    epochs = base.train.epochs
    for name in embedded:
        median = statistics.median(times[name])
        over_run = (epochs * (median - storage_pass) + storage_pass) / (epochs * baseline)
        print(f"  {name:15s} {median:7.2f} s  ratio {median / baseline:5.2f}x (target <= 1.25x), "
              f"over a {epochs}-epoch run {over_run:5.2f}x  (runs: {', '.join(f'{s:.2f}' for s in times[name])})")
    print(f"  of which the initial storage pass: {storage_pass:.2f} s ({storage_pass / baseline:.2f} of a class_balanced epoch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per sampler in (b)")
    parser.add_argument("--batches", type=int, default=50, help="batches timed per sampler in (a)")
    parser.add_argument("--device", default="cpu", help="storage device in (a): cpu | cuda")
    parser.add_argument("--part", choices=["a", "b"], help="run only (a) selection cost or (b) epoch time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 batches, a 40-class subset, 1 repeat")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batches = 1, 3
    embedded = list(EMBEDDED_SAMPLERS)
    device = torch.device(args.device)

    if args.part != "b":
        print(f"(a) selection cost at SOP scale: storage {SOP_IMAGES} x {SOP_DIM} on {device}, batch {SOP_BATCH}, "
              f"default knobs, {SOP_IMAGES // SOP_BATCH} batches per epoch, torch threads {torch.get_num_threads()}")
        for name in embedded:
            ms = selection_cost(name, args.batches, device)
            print(f"  {name:15s} {ms:8.2f} ms / batch  {ms * (SOP_IMAGES // SOP_BATCH) / 1e3:8.2f} s / epoch")
    if args.part != "a":
        epoch_ratios(embedded, args)


if __name__ == "__main__":
    main()
