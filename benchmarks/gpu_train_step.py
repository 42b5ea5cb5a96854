"""Training throughput on a GPU: ResNet50 at 224 px on generated CUB-format JPEGs, with and
without mixed precision, and the loader's share of a step.

For each ``train.amp`` setting (off, bf16, fp16) it builds the pipeline's own training setup
(``dml.training.build_training``: DataLoader with ``--workers`` workers and pinned memory,
channels-last, margin loss + distance miner, SPC-2 batches of ``--batch`` 112) and times ``--steps`` steps
after ``--warmup``:

* ``images/s``: end to end, loader included;
* ``loader share``: the fraction of the step spent waiting for the next batch (0 = the GPU never
  waits; the loader is not the bottleneck);
* ``compute images/s``: the same steps on one batch held on the GPU (the ceiling without loading).

Usage on any CUDA machine: ``python benchmarks/gpu_train_step.py [--images 2240] [--workers 8]``.
``--device cpu --images 64 --batch 16 --size 64 --steps 1`` is a smoke run (tests/test_benchmarks.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dml.config import parse_params  # noqa: E402
from dml.data.loading import FileSplit  # noqa: E402
from dml.data.stats import Stats  # noqa: E402
from dml.training.metric import build_training  # noqa: E402
from loader_throughput import write_images  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(setup, params, images, index) -> None:
    loss, _ = setup.batch_loss(images, index)
    setup.optimizer.zero_grad(set_to_none=True)
    setup.scaler.scale(loss).backward()
    setup.scaler.step(setup.optimizer)
    setup.scaler.update()


def measure(split: FileSplit, amp: str, args: argparse.Namespace) -> dict[str, float]:
    params = parse_params({
        "model": {"name": "resnet50", "embed_dim": 128, "freeze_bn": True},
        "train": {"batch_size": args.batch, "device": args.device, "amp": amp, "epochs": 1},
        "sampler": {"name": "class_balanced", "class_balanced": {"samples_per_class": 2}},
        "transforms": {"train": "random_resized_crop", "size": args.size, "resize": max(args.size, round(args.size * 8 / 7)), "hflip": True},
        "loader": {"num_workers": args.workers},
    })
    setup = build_training(params, split, Stats([123.7, 116.3, 103.5], [58.4, 57.1, 57.4], 3, "generated"))
    device = setup.device
    setup.seed_epoch(0)
    batches = iter(setup.loader)
    waited = stepped = 0.0
    first_batch = None
    for i in range(args.warmup + args.steps):
        started = time.perf_counter()
        images, index = next(batches)
        arrived = time.perf_counter()
        step(setup, params, images, index)
        synchronize(device)
        done = time.perf_counter()
        first_batch = first_batch or (images, index)
        if i >= args.warmup:
            waited += arrived - started
            stepped += done - arrived
    images, index = first_batch
    images = images.to(device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step(setup, params, images, index)
    synchronize(device)
    compute = time.perf_counter() - started
    count = args.steps * params.train.batch_size
    return {"images_per_s": count / (waited + stepped), "loader_share": waited / (waited + stepped), "compute_images_per_s": count / compute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2240, help="generated JPEGs (500x375), 2 per class")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=112)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--amp", nargs="+", default=["off", "bf16", "fp16"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_train_step.py: no CUDA device visible; run it on a GPU machine (or --device cpu for a smoke run)")
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = write_images(root, args.images, classes=max(2, args.images // 2))
        labels = np.array([label for _, label in rows])
        split = FileSplit(root, np.array([rel.encode() for rel, _ in rows], dtype=np.bytes_), labels, np.arange(len(rows)), 3)
        name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        print(f"{name}: resnet50 (frozen BN) at {args.size} px, batch {args.batch}, {args.workers} workers, {args.steps} steps after {args.warmup}")
        print("| amp | images/s | loader share | compute images/s |")
        print("| --- | --- | --- | --- |")
        for amp in args.amp:
            r = measure(split, amp, args)
            print(f"| {amp} | {r['images_per_s']:.0f} | {r['loader_share']:.1%} | {r['compute_images_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
