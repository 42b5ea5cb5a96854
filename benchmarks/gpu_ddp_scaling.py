"""Images/s of distributed training at 1 and N GPUs: the scaling efficiency (needs CUDA).

The pipeline's training run (ResNet50, 224 px, 512-d embedding, margin loss with the distance
miner, AMP bf16) on synthetic uint8 images already on the GPU, so the number is the model's, the
gather's and the gradient all-reduce's, not the loader's. For each world size in ``--worlds``
(default: 1 and every visible GPU), ``--steps`` timed steps at the global batch
``--per-gpu x world`` (weak scaling: each GPU keeps its batch); prints images/s and the
efficiency ``rate(N) / (N x rate(1))``. Runs on one GPU too (then only world 1).

Usage: ``python benchmarks/gpu_ddp_scaling.py [--per-gpu 112] [--steps 30] [--worlds 1 2 4 8]``
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rank_main(rank: int, world: int, port: int, per_gpu: int, steps: int, out: str) -> None:
    import numpy as np

    from dml.config import parse_params
    from dml.data.loading import ArraySplit
    from dml.data.stats import Stats
    from dml.device import autocast
    from dml.training import distributed
    from dml.training.metric import build_training

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl")
    batch = per_gpu * world
    labels = np.repeat(np.arange(64), 8)
    split = ArraySplit(np.zeros((len(labels), 3, 8, 8), dtype=np.uint8), labels, np.arange(len(labels)))  # positions only
    params = parse_params({"model": {"name": "resnet50", "embed_dim": 512}, "train": {"batch_size": batch, "device": "cuda", "amp": "bf16"},
                           "distributed": {"nproc_per_node": world}, "transforms": {"size": 224, "resize": 256}})
    run = build_training(params, split, Stats([128.0] * 3, [64.0] * 3, 3, "synthetic"))
    images = torch.randint(0, 256, (per_gpu, 3, 224, 224), dtype=torch.uint8, device=run.device)
    images = images.contiguous(memory_format=torch.channels_last)
    index = torch.arange(per_gpu) + rank * per_gpu
    run.seed_epoch(0)
    run.model.train()

    def step() -> None:
        with autocast(run.device, "bf16"):
            local = run.forward_model(images)
        embeddings = distributed.gather(local.float()) if world > 1 else local.float()
        positions = distributed.gather_plain(index) if world > 1 else index
        batch_labels = run.labels[positions.to(run.device)]
        loss = run.criterion(embeddings, batch_labels, run.miner(embeddings, batch_labels))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.before_step()
        run.optimizer.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if rank == 0:
        torch.save(batch * steps / seconds, Path(out) / f"{world}.pt")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-gpu", type=int, default=112)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worlds", type=int, nargs="+", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPUs")
    gpus = torch.cuda.device_count()
    worlds = args.worlds or sorted({1, gpus})
    print(f"{gpus} x {torch.cuda.get_device_name(0)}; ResNet50 224 px bf16, {args.per_gpu} images per GPU, {args.steps} steps")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            if world > gpus:
                print(f"world {world}: skipped ({gpus} GPUs)")
                continue
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(rank_main, args=(world, port, args.per_gpu, args.steps, tmp), nprocs=world, join=True)
            rates[world] = torch.load(Path(tmp) / f"{world}.pt")
            efficiency = rates[world] / (world * rates[1]) if 1 in rates else float("nan")
            print(f"world {world}: {rates[world]:.0f} images/s, scaling efficiency {efficiency:.2f}", flush=True)


if __name__ == "__main__":
    main()
