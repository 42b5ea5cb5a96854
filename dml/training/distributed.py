"""Data-parallel training that computes what the one-device run computes.

The rule: the run over ``W`` ranks is the one-device run of the same *global* batch.

* **Batches.** The batch sampler draws the same global batches on every rank (same seeds); rank
  ``r`` loads the contiguous slice ``r`` of each (dml/data/loading.py, ``EpochBatches``), and
  each image keeps the augmentation seed of its position in the global batch.
* **Mining and loss over the global batch.** :func:`gather` is a *differentiable* all-gather
  (``torch.distributed.nn.functional.all_gather``): every rank holds the global batch's
  embeddings in the one-device order, so every miner and loss, with identical random streams on
  all ranks, picks the same tuples and computes the same loss ``L``.
* **Gradients.** The backward of the all-gather sums, over ranks, the gradient each rank's loss
  sends to a slice, so rank ``r``'s own slice receives ``W * dL/de_r`` (all ``W`` ranks computed
  the same ``L``). DDP then *averages* the model gradients over ranks:
  ``(1/W) * sum_r W * dL/de_r * de_r/dtheta = dL/dtheta``, the one-device gradient. So the loss
  is scaled by 1, not by ``W`` (pytorch-metric-learning's ``DistributedLossWrapper`` multiplies
  by the world size because its gather passes no gradient to other ranks' slices).
* **The loss's own parameters** (proxies, class weights, beta) get ``dL/dphi`` from the same
  global computation on every rank; :func:`average_gradients` all-reduces them (a mean of equal
  values) so that rounding can never let the ranks drift apart.

Rank 0 writes every output; the others compute and exit. Workers are started by torch's elastic
agent (:func:`launch`), never by hand-written process management.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from dml.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from dml.training_config import DistributedConfig

WORKER_ENV = "DML_DISTRIBUTED_WORKER"  # set in the workers the launcher starts


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def writer(self) -> bool:
        """The one rank that writes checkpoints, outputs and tracking records."""
        return self.rank == 0


def current() -> World:
    """This process's place in the run (rank 0 of 1 outside a distributed run)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size())


def in_worker() -> bool:
    """Whether this process is a worker started by :func:`launch`."""
    return os.environ.get(WORKER_ENV) == "1"


def launch(cfg: DistributedConfig, module: str, name: str) -> None:
    """Run ``python -m module`` as ``cfg.nproc_per_node`` workers of this node through torch's
    elastic agent (what ``torchrun`` runs), static rendezvous at ``master_addr:master_port``. A
    worker that dies takes the others down; that is one line naming the rank and how it ended."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=cfg.nnodes, max_nodes=cfg.nnodes, nproc_per_node=cfg.nproc_per_node, run_id=f"dml-{name}",
        rdzv_backend="static", rdzv_endpoint=f"{cfg.master_addr}:{cfg.master_port}", rdzv_configs={"rank": cfg.node_rank},
        max_restarts=0, monitor_interval=0.2, start_method="spawn",
    )
    os.environ[WORKER_ENV] = "1"  # inherited by the workers
    # each rank's share of the cores (torchrun would set 1 and say so); a rank's own failure is
    # reported below in one line, not in the agent's multi-line log
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node)))
    elastic_log = logging.getLogger("torch.distributed.elastic")
    level = elastic_log.level
    elastic_log.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", module)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
        raise TrainingError(f"rank {rank} of {cfg.world_size} stopped ({how}); the other ranks were stopped, the last "
                            f"epoch checkpoint is kept and a rerun resumes from it") from None
    finally:
        os.environ.pop(WORKER_ENV, None)
        elastic_log.setLevel(level)


def init(cfg: DistributedConfig, device: torch.device, threads: int = 0) -> World:
    """Join the process group the launcher set up (environment ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ...); the device becomes this rank's GPU on CUDA; on CPU, without
    ``threads`` (``train.num_threads``), each rank gets its share of the cores."""
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ConfigError("distributed.sync_batchnorm: SyncBatchNorm runs on CUDA only; on CPU use model.freeze_bn: true "
                          "or per-rank BatchNorm (sync_batchnorm: false)")
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    elif not threads:  # the node's cores shared between its ranks, not each rank taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    dist.init_process_group(backend)
    return current()


def finish(clean: bool = True) -> None:
    """Leave the process group (after the other ranks, unless this rank is failing)."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is this rank noticing another rank's end (a collective that lost its
    peer): the launcher then names the rank that stopped first, in one line."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed"))


def rank_device(device: torch.device) -> torch.device:
    """On CUDA, this rank's own GPU."""
    return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device


def gather(local: torch.Tensor) -> torch.Tensor:
    """The global batch from every rank's slice, in rank order, differentiable (module docstring)."""
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch 2.14 marks it deprecated in favour of a private module (_functional_collectives);
        # it stays the public differentiable all-gather, and the equality tests pin what it does
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(local.contiguous()), dim=0)


def gather_plain(local: torch.Tensor) -> torch.Tensor:
    """The same for tensors that carry no gradient (dataset positions), returned where they were
    (NCCL gathers CUDA tensors only)."""
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else local.device
    parts = [torch.empty_like(local, device=on) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.to(on).contiguous())
    return torch.cat(parts, dim=0).to(local.device)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Mean over ranks of each gradient (parameters outside the DDP module)."""
    world = dist.get_world_size()
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(world)


def broadcast(value: object) -> object:
    """Rank 0's ``value`` on every rank (a checkpoint read on node 0 only)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sharded_rows(count: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn(rows)`` over all ``count`` rows, each rank computing a contiguous share, the results
    gathered in row order on every rank (the embedded samplers' storage refresh)."""
    world = current()
    if not world.distributed:
        return fn(np.arange(count))
    mine = np.array_split(np.arange(count), world.size)[world.rank]
    parts: list = [None] * world.size
    dist.all_gather_object(parts, fn(mine))
    return np.concatenate(parts, axis=0)
