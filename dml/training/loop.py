"""The one resumable fitting loop that training and pretraining share.

A :class:`Fit` owns everything a fitting run mutates (model, optimiser, grad scaler and, in its
subclasses, the loss, miner, sampler storage and random streams); its ``state_dict()`` is the
checkpoint. :func:`fit` runs its epochs: re-seed every random stream from ``(seed, epoch)``, step
through the epoch's batches under the divergence guard, record the epoch, save the checkpoint.
Because each epoch starts from seeds and the saved state alone, a run resumed after any epoch
replays exactly the batches, draws and weights of the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from dml.errors import TrainingError
from dml.io import atomic_file, safe_load
from dml.training.distributed import broadcast, current

Record = TypeVar("Record")  # one epoch's numbers (a dataclass)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of one random stream for one epoch: independent of every other epoch and stream."""
    return int(np.random.default_rng([seed, epoch, stream]).integers(2**62))


class Fit(ABC, Generic[Record]):
    """One fitting run. Subclasses set the parts below and say how a batch is scored and an epoch
    recorded; the loop does the rest once for all of them."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # a no-op unless amp is fp16 on CUDA
    loader: torch.utils.data.DataLoader  # (images, dataset positions) batches; its batch sampler is re-seeded per epoch
    record_type: type[Record]
    records_key: str = "records"  # the checkpoint's key of the per-epoch records

    @abstractmethod
    def seed_epoch(self, epoch: int) -> None:
        """Re-seed every random stream for ``epoch`` (batch order, augmentation, mining)."""

    def begin_epoch(self, epoch: int) -> None:
        """Work before the epoch's first batch that counts in its time (embedded samplers' storage)."""

    @abstractmethod
    def batch_loss(self, images: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The batch's loss (forward pass and scoring), which the loop checks before stepping, and
        what :meth:`step_done` counts of the batch once it is stepped."""

    def before_step(self) -> None:
        """After the backward pass, before the optimiser step (distributed: average the gradients
        of parameters outside the DDP module)."""

    @abstractmethod
    def step_done(self, loss: float, counts: Any) -> None:
        """Account a stepped batch (its loss and :meth:`batch_loss`'s counts) in the epoch's totals."""

    @abstractmethod
    def end_epoch(self, epoch: int, seconds: float) -> Record:
        """The epoch's record (and any end-of-epoch work: monitoring, selection); resets totals."""

    @abstractmethod
    def diverged(self, loss: float, epoch: int, step: int) -> str:
        """The one-line error of a non-finite loss, naming the knobs to change."""

    def describe(self, record: Record) -> str:
        """The progress line printed after an epoch."""
        return str(record)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


def read_checkpoint(path: Path | None, fingerprint: str, what: str = "training checkpoint") -> dict | None:
    """The checkpoint's content if it belongs to this run (same fingerprint), else None. Loaded
    with ``weights_only=True``: a file dropped there cannot run code."""
    if path is None or not Path(path).is_file():
        return None
    state = safe_load(path, what)
    return state if state.get("fingerprint") == fingerprint else None


def fit(
    task: Fit[Record],
    epochs: int,
    *,
    fingerprint: str,
    checkpoint: Path | None = None,
    meta: dict[str, Any] | None = None,
    on_start: Callable[[dict[str, Any], list[Record]], None] | None = None,
    on_epoch: Callable[[Record], None] | None = None,
    progress: bool = True,
    name: str = "epoch",
    what: str = "training checkpoint",
) -> list[Record]:
    """Run ``task`` for ``epochs`` epochs; returns the per-epoch records. With ``checkpoint``: saved
    after every epoch (one flat dict: the fingerprint, ``meta``, the task's state and the records)
    and resumed from when its fingerprint matches. ``meta`` (say, the tracking attempt) is saved
    with it; a resumed run continues with the checkpoint's. ``on_start(meta,
    restored records)`` is called once the run is set up, ``on_epoch(record)`` after each checkpoint.
    In a distributed run rank 0 alone reads and writes the checkpoint (and sends it to the others)."""
    meta = dict(meta or {})
    records: list[Record] = []
    world = current()
    state = read_checkpoint(checkpoint, fingerprint, what) if world.writer else None
    if world.distributed:
        state = broadcast(state)
    if state is not None:
        task.load_state_dict(state)
        records = [task.record_type(**record) for record in state[task.records_key]]
        meta = {key: state[key] for key in meta}
        if world.writer:
            print(f"resuming from {checkpoint} after {name} {len(records)}/{epochs}")
    if on_start is not None:
        on_start(meta, list(records))
    task.model.train()
    for epoch in range(len(records), epochs):
        task.seed_epoch(epoch)
        started = time.perf_counter()
        task.begin_epoch(epoch)
        bar = tqdm(task.loader, total=len(task.loader), desc=f"{name} {epoch + 1}/{epochs}", unit="batch", disable=not progress)
        for step, (images, index) in enumerate(bar):
            loss, counts = task.batch_loss(images, index)
            value = loss.item()
            if not math.isfinite(value):
                # Stop before the step corrupts the weights: the last checkpoint and every output stay.
                raise TrainingError(task.diverged(value, epoch, step))
            task.optimizer.zero_grad(set_to_none=True)
            task.scaler.scale(loss).backward()
            task.before_step()
            task.scaler.step(task.optimizer)
            task.scaler.update()
            task.step_done(value, counts)
        record = task.end_epoch(epoch, time.perf_counter() - started)
        records.append(record)
        if progress:
            print(task.describe(record), flush=True)
        if checkpoint is not None and world.writer:
            with atomic_file(checkpoint) as tmp:
                torch.save({"fingerprint": fingerprint, **meta, **task.state_dict(),
                            task.records_key: [asdict(r) for r in records]}, tmp)
        if on_epoch is not None:
            on_epoch(record)
    task.model.eval()
    return records
