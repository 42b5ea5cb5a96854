"""Training-loop throughput of the train stage vs a bare PyTorch loop, measured in one run.

Both loops train the same model on the same batches (same sampler, miner, loss, optimiser and
augmentation; the train stage's loop also runs its tqdm bar, epoch bookkeeping and
checkpointing). After a warm-up, runs alternate A-B, B-A, ... so that machine noise hits both; the ratio of median
images/s is printed (target >= 0.95). Also times a no-op ``dvc repro`` when the pipeline has
been run in this repository.

Usage: ``python benchmarks/train_throughput.py [--epochs 1] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
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
from dml.training.metric import build_training, train  # noqa: E402


def load_data(params: Params) -> tuple[ArraySplit, Stats]:
    if (ROOT / PREPROCESSED / "stats.json").is_file():
        return load_split(ROOT / PREPROCESSED, "train"), load_stats(ROOT / PREPROCESSED)
    print("no preprocessed data (run `dvc repro`): using random images of the default shape")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(224), 40)
    images = rng.integers(0, 256, (len(labels), 1, 32, 32), dtype=np.uint8)
    return ArraySplit(images, labels, np.arange(len(labels))), Stats([128.0], [64.0], 1, "random")


def bare_loop(params: Params, split: ArraySplit, stats: Stats) -> float:
    """The minimum a PyTorch user would write for the same training; returns seconds."""
    cfg = params.train
    setup = build_training(params, split, stats)
    model, criterion, miner, optimizer = setup.model, setup.criterion, setup.miner, setup.optimizer
    labels = setup.labels
    model.train()
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        setup.seed_epoch(epoch)
        for images, index in setup.loader:
            embeddings = model(images)
            loss = criterion(embeddings, labels[index], miner(embeddings, labels[index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def stage_loop(params: Params, split: ArraySplit, stats: Stats) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train(params, split, stats, checkpoint=Path(tmp) / "ckpt.pt", progress=True)
        return time.perf_counter() - started


def noop_repro_seconds() -> float | None:
    if not (ROOT / "dvc.lock").is_file():
        return None
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--quiet"], cwd=ROOT)
    if status.returncode != 0:
        return None  # pipeline not up to date: a repro would not be a no-op
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = load_params(ROOT / "params.yaml")
    params = Params.model_validate(
        {**base.model_dump(), "train": {**base.train.model_dump(), "epochs": args.epochs, "track_test_recall": False}}
    )
    split, stats = load_data(params)
    images_per_run = args.epochs * (len(split) // params.train.batch_size) * params.train.batch_size
    bare_loop(params, split, stats)  # warm-up (allocator, thread pool), not counted
    bare, stage = [], []
    for repeat in range(args.repeats):
        # A-B then B-A: a drift of the machine's speed during the run hits both loops equally.
        order = [(bare, bare_loop), (stage, stage_loop)]
        for times, loop in order if repeat % 2 == 0 else order[::-1]:
            times.append(loop(params, split, stats))
    bare_ips = images_per_run / statistics.median(bare)
    stage_ips = images_per_run / statistics.median(stage)
    print(f"threads: {torch.get_num_threads()}, images per run: {images_per_run}, repeats: {args.repeats}")
    print(f"bare PyTorch loop : {bare_ips:8.1f} images/s  (runs: {', '.join(f'{s:.2f}s' for s in bare)})")
    print(f"train stage loop  : {stage_ips:8.1f} images/s  (runs: {', '.join(f'{s:.2f}s' for s in stage)})")
    print(f"ratio stage/bare  : {stage_ips / bare_ips:.3f}  (target >= 0.95)")
    noop = noop_repro_seconds()
    print("no-op dvc repro   : " + (f"{noop:.2f} s (target <= 3 s)" if noop is not None else "skipped (pipeline not run or not up to date)"))


if __name__ == "__main__":
    main()
