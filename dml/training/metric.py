"""Metric learning: sampler -> batch -> model -> miner -> loss -> optimiser step, once per batch,
on the shared resumable loop (dml/training/loop.py).

Batches come from a DataLoader over the split (``loader.num_workers`` workers) with the batch
sampler as its batch sampler; the forward pass runs on ``train.device`` (channels-last on CUDA)
under ``train.amp``, and the miner and loss always in float32.

Reproducible on CPU: every source of randomness (batch sampling, mining, augmentation) is
re-seeded from ``(train.seed, epoch)`` at the start of each epoch, and each image's augmentation
from its position in the epoch (see dml/data/loading.py), so a run resumed from an epoch
checkpoint replays exactly the batches the uninterrupted run would have seen, with any number of
workers. The embedded samplers' embedding storage (filled before epoch 1, updated by every batch)
is part of the checkpoint for the same reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dml.config import Params
from dml.data.loading import EpochBatches, ImageSource, in_memory, train_loader
from dml.data.stats import Stats
from dml.device import autocast, grad_scaler, place_images, place_model, resolve_device
from dml.errors import ConfigError, TrainingError
from dml.losses.base import Loss
from dml.losses.registry import build_loss
from dml.miners.registry import build_miner
from dml.models import EmbeddingModel, build_model
from dml.registry import lookup
from dml.samplers.registry import build_sampler
from dml.training.distributed import average_gradients, current, gather, gather_plain, rank_device, sharded_rows
from dml.training.loop import Fit, epoch_seed, fit
from dml.training.monitoring import embedding_space, embed_pass, fixed_sample, quick_recall_at_1, spectrum_sample
from dml.training.pretrain import PretrainedBackbone

# ``optim.name`` in params.yaml -> optimizer class (the loss's own parameters get their own group).
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    tuples_per_batch: float | None  # anchors the miner gave per batch; None without a miner
    beta_mean: float | None  # margin loss only
    seconds: float
    # monitoring only, never selects anything: Recall@1 of monitor.queries seeded test queries
    # against the whole test split, every monitor.every epochs (and the last); None between
    test_recall_at_1: float | None
    val_recall_at_1: float | None = None  # on the held-out validation classes (data.val_classes > 0), in full
    # the embedding space on a fixed sample of training images (train.spectrum_every), None between
    train_rho: float | None = None  # KL(U || s), all singular values
    train_rho_skip1: float | None = None  # without the largest (the paper's rho)
    train_pi_ratio: float | None = None
    train_sv1: float | None = None  # the three largest singular values, normalised to sum 1 over all
    train_sv2: float | None = None
    train_sv3: float | None = None


@dataclass
class TrainResult:
    model: EmbeddingModel  # the selected epoch's weights (train.selection)
    curve: list[EpochRecord]
    criterion: Loss  # with its trained parameters (beta, proxies, class weights, centres)
    selected_epoch: int
    selection: str  # "val" (best validation Recall@1) or "last"


def training_fingerprint(params: Params, stats: Stats, init: PretrainedBackbone | None = None) -> str:
    """Identifies a training run: the sections that shape it plus the data it reads (and the
    pretrained backbone it starts from). A checkpoint is only resumed by a run with the same
    fingerprint."""
    content = {"params": params.run_config(), "data": asdict(stats)}
    if init is not None:
        content["init"] = init.sha256
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def contiguous_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map arbitrary class ids to 0..C-1 (per-class parameters such as margin loss's beta)."""
    classes, inverse = np.unique(labels, return_inverse=True)
    return inverse.astype(np.int64), len(classes)


def due(epoch: int, every: int, epochs: int) -> bool:
    """Whether a pass that runs every ``every`` epochs (0: never) runs after ``epoch``; the last always."""
    return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs)


class MetricLearning(Fit[EpochRecord]):
    """Everything one training run is made of, built from params, and its state as one checkpoint
    (shared with the benchmarks' bare loops, so they train exactly the same thing)."""

    record_type = EpochRecord
    records_key = "curve"

    def __init__(self, params: Params, train_split: ImageSource, stats: Stats, init: PretrainedBackbone | None = None,
                 test_split: ImageSource | None = None, val_split: ImageSource | None = None) -> None:
        cfg = self.cfg = params.train
        self.params = params
        torch.manual_seed(cfg.seed)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if len(train_split) < cfg.batch_size:
            raise ConfigError(f"train.batch_size: {cfg.batch_size} exceeds the {len(train_split)} training images (not one batch per epoch)")
        self.world = world = current()
        self.device = device = rank_device(resolve_device(cfg.device))
        labels_np, num_classes = contiguous_labels(train_split.labels)
        self.model = build_model(params.model, stats.channels, stats.mean, stats.std)  # built on the CPU: same init everywhere
        if init is not None:
            try:
                self.model.features.load_state_dict(init.features)
            except RuntimeError as err:
                raise ConfigError(f"model.name: the pretrained backbone does not fit {params.model.name!r} "
                                  f"({str(err).splitlines()[0]}); rerun stage pretrain") from None
        self.criterion = build_loss(params.loss, num_classes, params.model.embed_dim)
        if world.distributed and params.distributed.sync_batchnorm:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        place_model(self.model, device)
        self.criterion.to(device)
        # the forward pass of training; self.model stays the plain module (checkpoint, monitoring, saving)
        self.forward_model: torch.nn.Module = self.model
        if world.distributed:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.sampler, self.storage = build_sampler(params.sampler, labels_np, cfg.batch_size, params.model.embed_dim, device)
        self.optimizer = lookup(OPTIMIZERS, "optim.name", params.optim.name)(
            [{"params": self.model.parameters()}, *self.criterion.param_groups(params.optim.lr)],
            lr=params.optim.lr,
            weight_decay=params.optim.weight_decay,
        )
        self.miner = build_miner(params.miner, cfg.seed)
        self.scaler = grad_scaler(device, cfg.amp)
        self.epoch_batches = EpochBatches(self.sampler, world.rank, world.size)
        self.train_split = train_split
        self.loader = train_loader(train_split, params.transforms, self.epoch_batches, device,
                                   params.loader.num_workers, params.loader.prefetch_factor)
        self.labels = torch.from_numpy(labels_np).to(device)
        self.test_split, self.val_split = test_split, val_split
        monitor = params.monitor
        self.monitor_every = monitor.every
        self.test_queries = None if test_split is None or not monitor.queries else fixed_sample(len(test_split), monitor.queries, cfg.seed, 6)
        self.spectrum_split = train_split.subset(spectrum_sample(train_split.labels, cfg.spectrum_sample, cfg.seed))
        self.select_val = val_split is not None and cfg.selection != "last"
        self.best: dict | None = None  # selection by val: {"epoch", "score", "model"} of the best epoch so far
        self.total_loss = self.total_tuples = 0.0

    def seed_epoch(self, epoch: int) -> None:
        seed = self.cfg.seed
        self.miner.manual_seed(epoch_seed(seed, epoch, 1))
        self.criterion.manual_seed(epoch_seed(seed, epoch, 3))
        self.epoch_batches.start(np.random.default_rng([seed, epoch]), epoch_seed(seed, epoch, 2))

    def begin_epoch(self, epoch: int) -> None:
        if self.storage is not None:
            self.storage.flush()
            if self.storage.refresh_due(epoch):  # the initial fill counts in epoch 1's time; each rank embeds a share
                vectors = sharded_rows(len(self.train_split), lambda rows: embed_pass(
                    self.model, self.train_split.subset(rows), self.params, self.storage.batch_size))
                self.storage.refresh(torch.from_numpy(vectors))

    def batch_loss(self, images: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        """Forward (under autocast), mine and score in float32; also the tuple count (None without a
        miner). Distributed: this rank's slice is forwarded, mining and the loss see the gathered
        global batch (dml/training/distributed.py)."""
        with autocast(self.device, self.cfg.amp):
            embeddings = self.forward_model(place_images(images, self.device))
        embeddings = embeddings.to(torch.get_default_dtype())  # float32 (from float16 / bfloat16 under amp)
        if self.world.distributed:
            embeddings, index = gather(embeddings), gather_plain(index)
        if self.storage is not None:  # later batches are chosen from the updated storage
            self.storage.record(index.numpy(), embeddings)
        batch_labels = self.labels[index.to(self.device)]
        tuples = self.miner(embeddings, batch_labels)
        return self.criterion(embeddings, batch_labels, tuples), (len(tuples) if tuples is not None else None)

    def before_step(self) -> None:
        if self.world.distributed:
            average_gradients(self.criterion.parameters())

    def step_done(self, loss: float, counts: int | None) -> None:
        self.total_loss += loss
        self.total_tuples += counts or 0

    def end_epoch(self, epoch: int, seconds: float) -> EpochRecord:
        params, cfg, steps = self.params, self.cfg, len(self.sampler)
        if params.miner.knobs.produces and self.total_tuples == 0:
            raise TrainingError(
                f"epoch {epoch + 1}: miner.name={params.miner.name!r} found no tuple in any batch "
                f"(each batch needs two samples of a class and another class); check the sampler and batch size"
            )
        watch = self.world.writer  # monitoring is rank 0's: it never shapes the weights
        monitor = watch and self.test_split is not None and due(epoch, self.monitor_every, cfg.epochs)
        val = watch and self.val_split is not None
        record = EpochRecord(
            epoch=epoch + 1,
            loss=self.total_loss / steps,
            tuples_per_batch=self.total_tuples / steps if params.miner.knobs.produces else None,
            beta_mean=self.criterion.monitored().get("beta_mean"),
            seconds=seconds,
            test_recall_at_1=quick_recall_at_1(self.model, self.test_split, params, self.test_queries) if monitor else None,
            val_recall_at_1=quick_recall_at_1(self.model, self.val_split, params) if val else None,
            **(embedding_space(self.model, self.spectrum_split, params) if watch and due(epoch, cfg.spectrum_every, cfg.epochs) else {}),
        )
        self.total_loss = self.total_tuples = 0.0
        if self.select_val and watch and (self.best is None or record.val_recall_at_1 > self.best["score"]):  # ties: the earlier epoch
            self.best = {"epoch": record.epoch, "score": record.val_recall_at_1,
                         "model": {key: value.detach().clone() for key, value in self.model.state_dict().items()}}
        return record

    def diverged(self, loss: float, epoch: int, step: int) -> str:
        return (f"training diverged: loss {loss} at epoch {epoch + 1}, batch {step + 1} "
                f"(loss.name={self.params.loss.name}, optim.lr={self.params.optim.lr}); lower the learning rate")

    def describe(self, record: EpochRecord) -> str:
        r1 = "".join(f", {name} R@1 {value:.3f}" for name, value in
                     (("val", record.val_recall_at_1), ("test", record.test_recall_at_1)) if value is not None)
        return f"epoch {record.epoch}: loss {record.loss:.4f}{r1} ({record.seconds:.1f} s)"

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "loss": self.criterion.state_dict(), "loss_rng": self.criterion.generator.get_state(),
                "miner_rng": self.miner.state_dict(), "best": self.best,
                **({"storage": self.storage.state_dict()} if self.storage is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.criterion.load_state_dict(state["loss"])
        self.criterion.generator.set_state(state["loss_rng"])
        self.miner.load_state_dict(state["miner_rng"])
        self.best = state["best"]
        if self.storage is not None:
            self.storage.load_state_dict(state["storage"])


def build_training(params: Params, train_split: ImageSource, stats: Stats, init: PretrainedBackbone | None = None) -> MetricLearning:
    """The training run without monitoring (benchmarks, tests); ``init``: start the backbone from
    the pretrain stage's features (the head stays fresh)."""
    return MetricLearning(params, train_split, stats, init)


def train(
    params: Params,
    train_split: ImageSource,
    stats: Stats,
    test_split: ImageSource | None = None,
    val_split: ImageSource | None = None,
    checkpoint: Path | None = None,
    on_start: Callable[[str, str, list[EpochRecord]], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    attempt: str = "",
    init: PretrainedBackbone | None = None,
) -> TrainResult:
    """Train from params; with ``checkpoint``, save every epoch there and resume from it when it
    belongs to the same training (fingerprint). ``attempt`` (a fresh run's id) is stored with it;
    a resumed training takes the checkpoint's, so it continues the same tracking run.
    ``on_start(fingerprint, attempt, restored_curve)`` is called once training is set up.
    ``val_split`` (held-out training classes) and ``test_split`` are embedded after epochs for the
    curve's Recall@1 when given. ``init``: the pretrained backbone to start from."""
    if params.train.selection == "val" and val_split is None:
        raise ConfigError("train.selection: val chooses the epoch on the validation split, but the data has none (set data.val_classes > 0)")
    # small splits are decoded once (every epoch reads them, and the monitored ones every epoch too)
    limit = params.loader.in_memory_mib
    run = MetricLearning(params, in_memory(train_split, limit), stats, init,
                         test_split=in_memory(test_split, limit) if test_split is not None else None,
                         val_split=in_memory(val_split, limit) if val_split is not None else None)
    fingerprint = training_fingerprint(params, stats, init)
    curve = fit(run, params.train.epochs, fingerprint=fingerprint, checkpoint=checkpoint, meta={"attempt": attempt},
                on_start=None if on_start is None else lambda meta, restored: on_start(fingerprint, meta["attempt"], restored),
                on_epoch=on_epoch, progress=progress)
    selected_epoch = curve[-1].epoch
    if run.best is not None:
        run.model.load_state_dict(run.best["model"])
        selected_epoch = run.best["epoch"]
    return TrainResult(model=run.model, curve=curve, criterion=run.criterion, selected_epoch=selected_epoch,
                       selection="val" if run.select_val else "last")
