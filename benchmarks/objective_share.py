"""The loss + miner share of a training step, and the epoch time, for every loss with its default miner.

One training step of the default small CNN on a default batch (112 glyph-sized images, SPC-4):
model forward, miner, loss forward, backward, optimiser step. The objective's share is measured
in the same run as the time of miner + loss forward + loss backward down to the embeddings
(a leaf copy of the batch's embeddings), divided by the whole step's time; medians over
interleaved repeats, so machine noise hits both. Target: <= 15% for every loss. Then one
whole training epoch per loss (``train``, as the stage runs it, without the per-epoch
monitoring), on the preprocessed glyph data when ``dvc repro preprocess`` has made it.

Usage: ``python benchmarks/objective_share.py [--repeats 30] [--threads 2]``
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

from dml.config import parse_params  # noqa: E402
from dml.data.loading import ArraySplit  # noqa: E402
from dml.data.stats import Stats  # noqa: E402
from dml.losses.config import LossSection  # noqa: E402
from dml.training.metric import build_training, train  # noqa: E402


def synthetic_data(classes: int = 281, per_class: int = 40, size: int = 32) -> tuple[ArraySplit, Stats]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), per_class)
    images = rng.integers(0, 256, (len(labels), 1, size, size), dtype=np.uint8)
    return ArraySplit(images, labels, np.arange(len(labels))), Stats([128.0], [64.0], 1, "random")


def glyph_data_or_synthetic() -> tuple[ArraySplit, Stats]:
    from dml.data.loading import load_split
    from dml.data.stats import load_stats
    from dml.paths import PREPROCESSED

    if (ROOT / PREPROCESSED / "stats.json").is_file():
        return load_split(ROOT / PREPROCESSED, "train"), load_stats(ROOT / PREPROCESSED)
    return synthetic_data()


def epoch_seconds(loss: str, split: ArraySplit, stats: Stats) -> float:
    params = parse_params({"loss": {"name": loss}, "miner": {"name": "auto"},
                           "train": {"epochs": 1, "track_test_recall": False, "spectrum_every": 0}})
    started = time.perf_counter()
    train(params, split, stats, progress=False)
    return time.perf_counter() - started


def measure(loss: str, split: ArraySplit, stats: Stats, repeats: int) -> tuple[float, float, str]:
    params = parse_params({"loss": {"name": loss}, "miner": {"name": "auto"}, "train": {"epochs": 1}})
    setup = build_training(params, split, stats)
    setup.seed_epoch(0)
    batches = iter(setup.loader)
    model, criterion, miner, optimizer = setup.model.train(), setup.criterion, setup.miner, setup.optimizer
    step_times, objective_times = [], []
    for i in range(repeats + 3):
        images, index = next(batches)
        labels = setup.labels[index]
        # the whole step
        started = time.perf_counter()
        embeddings = model(images)
        loss_value = criterion(embeddings, labels, miner(embeddings, labels))
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        optimizer.step()
        step = time.perf_counter() - started
        # the objective alone, on a leaf copy of the same batch's embeddings
        leaf = embeddings.detach().requires_grad_(True)
        started = time.perf_counter()
        criterion(leaf, labels, miner(leaf, labels)).backward()
        objective = time.perf_counter() - started
        optimizer.zero_grad(set_to_none=True)  # the loss's own parameters got gradients: drop them
        if i >= 3:  # warm-up
            step_times.append(step)
            objective_times.append(objective)
    return statistics.median(step_times), statistics.median(objective_times), params.miner.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split, stats = glyph_data_or_synthetic()
    print(f"threads {torch.get_num_threads()}, batch 112, small CNN, 32x32, {args.repeats} steps per loss, {len(split)} training images")
    print("| loss | miner | step ms | loss+miner ms | share | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for name in (n for n in LossSection.model_fields if n != "name"):
        step, objective, miner = measure(name, split, stats, args.repeats)
        epoch = epoch_seconds(name, split, stats)
        worst = max(worst, objective / step)
        print(f"| `{name}` | `{miner}` | {step * 1e3:.1f} | {objective * 1e3:.2f} | {objective / step:.1%} | {epoch:.1f} |", flush=True)
    print(f"largest share: {worst:.1%} (target <= 15%)")


if __name__ == "__main__":
    main()
