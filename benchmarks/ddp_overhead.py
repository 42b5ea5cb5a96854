"""What mining and the loss over the gathered global batch cost a distributed step, on CPU.

Two gloo ranks on loopback (``--world``), the pipeline's own training run (margin loss,
distance miner, small CNN on 32 px gray images, ``--dim`` 512) at global batches ``--batches``
(112 and 448). Per step, on rank 0: the forward pass of the rank's slice, the differentiable
all-gather of the embeddings and positions, mining and the loss on the global batch, and the
backward pass with DDP's gradient all-reduce and the optimiser step. Prints medians over
``--steps`` steps (after 3 warm-up steps) and the share of gather + mining + loss in the step.

Usage: ``python benchmarks/ddp_overhead.py [--world 2] [--batches 112 448] [--dim 512] [--steps 20]``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("forward", "gather", "mine + loss", "backward + all-reduce + step")


def rank_main(rank: int, world: int, port: int, batch: int, dim: int, steps: int, out: str) -> None:
    from dml.config import parse_params
    from dml.data.loading import ArraySplit
    from dml.data.stats import Stats
    from dml.training import distributed
    from dml.training.metric import build_training

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(400), 8)
    split = ArraySplit(rng.integers(0, 256, (len(labels), 1, 32, 32), dtype=np.uint8), labels, np.arange(len(labels)))
    params = parse_params({"model": {"embed_dim": dim}, "train": {"batch_size": batch},
                           "distributed": {"nproc_per_node": world}})
    run = build_training(params, split, Stats([128.0], [64.0], 1, "synthetic"))
    run.seed_epoch(0)
    run.model.train()
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    for step, (images, index) in enumerate(run.loader):
        if step == steps + 3:
            break
        dist.barrier()
        t0 = time.perf_counter()
        local = run.forward_model(images)
        t1 = time.perf_counter()
        embeddings, positions = distributed.gather(local), distributed.gather_plain(index)
        t2 = time.perf_counter()
        batch_labels = run.labels[positions]
        loss = run.criterion(embeddings, batch_labels, run.miner(embeddings, batch_labels))
        t3 = time.perf_counter()
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.before_step()
        run.optimizer.step()
        t4 = time.perf_counter()
        if step >= 3:
            for part, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[part].append(seconds)
    if rank == 0:
        torch.save({part: statistics.median(values) for part, values in times.items()}, Path(out) / f"{batch}.pt")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[112, 448])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"world {args.world} (gloo, CPU, {os.cpu_count()} cores), margin loss + distance miner, small CNN, 32 px, "
          f"{args.dim}-d, median ms per step on rank 0")
    print("| global batch | " + " | ".join(PARTS) + " | step | gather + mine + loss share |")
    print("|" + " --- |" * (len(PARTS) + 3))
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(rank_main, args=(args.world, port, batch, args.dim, args.steps, tmp), nprocs=args.world, join=True)
            median = torch.load(Path(tmp) / f"{batch}.pt")
            total = sum(median.values())
            share = (median["gather"] + median["mine + loss"]) / total
            print(f"| {batch} | " + " | ".join(f"{1000 * median[p]:.1f}" for p in PARTS) + f" | {1000 * total:.1f} | {share:.1%} |")


if __name__ == "__main__":
    main()
