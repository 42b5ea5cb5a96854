"""The training steps the distributed tests compare (tests/test_distributed.py): a tiny metric
learning run of each method, in this process (world 1) or as one rank of a gloo process group.
A module of its own so that spawned ranks can import it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dml.config import parse_params
from dml.data.loading import ArraySplit
from dml.data.stats import Stats

STEPS = 20
BATCH = 16
# one method of each kind: tuple miners (distance, rho_distance), a pair-set loss, a pair loss
# without a miner, two classification/proxy losses with their own parameters, an embedded sampler
METHODS: dict[str, dict] = {
    "margin-distance": {"loss": {"name": "margin"}, "miner": {"name": "distance"}},
    "margin-rho_distance": {"loss": {"name": "margin"}, "miner": {"name": "rho_distance", "rho_distance": {"p": 0.35}}},
    "npair": {"loss": {"name": "npair"}, "sampler": {"name": "class_balanced", "class_balanced": {"samples_per_class": 2}}},
    "multisimilarity": {"loss": {"name": "multisimilarity"}},
    "arcface": {"loss": {"name": "arcface"}},
    "proxyanchor": {"loss": {"name": "proxyanchor"}},
    "greedy_coreset": {"sampler": {"name": "greedy_coreset", "greedy_coreset": {"pool_size": 32}}},
}


def free_port() -> int:
    """A loopback port nobody listens on now (the rendezvous of a test's ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_split() -> ArraySplit:
    """12 classes x 8 gray 16 px images: class-specific blobs plus noise (learnable, varied)."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(12), 8)
    centres = rng.integers(0, 256, (12, 1, 16, 16))
    images = np.clip(centres[labels] + rng.normal(0, 40, (len(labels), 1, 16, 16)), 0, 255).astype(np.uint8)
    return ArraySplit(images, labels, np.arange(len(labels)))


def params_of(method: str):
    raw = {"model": {"name": "small_cnn", "embed_dim": 16, "freeze_bn": True},
           "train": {"batch_size": BATCH, "epochs": 3, "num_threads": 1, "seed": 3},
           "transforms": {"size": 16, "resize": 16, "shift": 2},
           "distributed": {"nproc_per_node": dist.get_world_size() if dist.is_initialized() else 1}}
    for section, values in METHODS[method].items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_params(raw)


def run_steps(method: str, dtype: torch.dtype = torch.float64) -> dict:
    """The losses of the first STEPS steps and the gradients of the first (model and loss), every
    tensor in ``dtype``: float64 by default, so that what is compared is the computation, not
    float32 rounding, which a stochastic miner or an embedded sampler amplifies step by step."""
    from dml.training.metric import build_training

    torch.set_default_dtype(dtype)
    run = build_training(params_of(method), tiny_split(), Stats([128.0], [64.0], 1, "tiny"))
    losses: list[float] = []
    first: dict[str, torch.Tensor] = {}
    epoch = 0
    run.model.train()
    while len(losses) < STEPS:
        run.seed_epoch(epoch)
        run.begin_epoch(epoch)
        for images, index in run.loader:
            loss, _ = run.batch_loss(images, index)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.before_step()
            if not losses:
                named = [*(("model." + n, p) for n, p in run.model.named_parameters()),
                         *(("loss." + n, p) for n, p in run.criterion.named_parameters())]
                first = {name: p.grad.detach().clone() for name, p in named if p.grad is not None}
            run.optimizer.step()
            losses.append(loss.item())
            if len(losses) == STEPS:
                break
        epoch += 1
    torch.set_default_dtype(torch.float32)
    return {"losses": losses, "grads": first}


def rank_main(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a ``world``-process gloo group on loopback: every method, results to ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        results = {(method, dtype): run_steps(method, dtype) for method in METHODS for dtype in (torch.float64, torch.float32)}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
