"""The training loop: sampler -> batch -> model -> miner -> loss -> Adam step, once per batch.

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
import math
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dml.config import Params
from dml.data.loading import EpochBatches, ImageSource, in_memory, train_loader
from dml.data.stats import Stats
from dml.device import autocast, grad_scaler, place_images, place_model, resolve_device
from dml.errors import ConfigError, TrainingError
from dml.indexing import exact_searcher, search_neighbours
from dml.inference import embed_source
from dml.io import atomic_file
from dml.io import safe_load
from dml.losses.base import Loss
from dml.metrics.embedding_space import embedding_density, singular_values, spectral_decay
from dml.losses.registry import build_loss
from dml.miners.base import Miner
from dml.miners.registry import build_miner
from dml.models import EmbeddingModel, build_model
from dml.registry import lookup
from dml.samplers.basic import BatchSampler
from dml.samplers.registry import build_sampler, build_storage
from dml.pretraining import PretrainedBackbone
from dml.samplers.storage import EmbeddingStorage

# ``optim.name`` in params.yaml -> optimizer class (the loss's own parameters get their own group).
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    tuples_per_batch: float | None  # anchors the miner gave per batch; None without a miner
    beta_mean: float | None  # margin loss only
    seconds: float
    test_recall_at_1: float | None  # monitoring only (train.track_test_recall); never selects anything
    val_recall_at_1: float | None = None  # on the held-out validation classes (data.val_classes > 0)
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
    content = {"params": params.training_config(), "data": asdict(stats)}
    if init is not None:
        content["init"] = init.sha256
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def contiguous_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map arbitrary class ids to 0..C-1 (per-class parameters such as margin loss's beta)."""
    classes, inverse = np.unique(labels, return_inverse=True)
    return inverse.astype(np.int64), len(classes)


def quick_recall_at_1(model: EmbeddingModel, split: ImageSource, params: Params) -> float:
    """Recall@1 on a split, for the per-epoch curve (the evaluate stage computes the full set)."""
    vectors = embed_pass(model, split, params)
    found = np.concatenate([ids[:, 0] for _, ids in search_neighbours(exact_searcher(vectors, "l2"), vectors, 1, exclude_self=True)])
    return float(np.mean(split.labels[found] == split.labels))


def read_checkpoint(path: Path | None, fingerprint: str) -> dict | None:
    """The checkpoint's state if it belongs to this training (same fingerprint), else None.
    Loaded with ``weights_only=True``: a file dropped there cannot run code."""
    if path is None or not Path(path).is_file():
        return None
    state = safe_load(path, "training checkpoint")
    return state if state.get("fingerprint") == fingerprint else None


def spectrum_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The fixed training images the per-epoch spectrum is computed on: the same for every epoch
    and every run of the same data and seed, so curves of two runs compare point by point."""
    rng = np.random.default_rng([seed, 4])
    return np.sort(rng.choice(len(labels), size=min(size, len(labels)), replace=False))


def embed_pass(model: EmbeddingModel, split: ImageSource, params: Params, batch_size: int | None = None) -> np.ndarray:
    """Embeddings of a split as the embed stage computes them (eval transforms, train's device),
    in batches of ``embed.batch_size`` unless ``batch_size`` is given."""
    return embed_source(model, split, params.transforms, batch_size or params.embed.batch_size,
                        num_workers=params.loader.num_workers, amp=params.train.amp)


def embedding_space(model: EmbeddingModel, split: ImageSource, params: Params) -> dict[str, float]:
    """rho (all values, and without the largest), pi_ratio and the top singular values of the
    model's embeddings of ``split``: how the spectrum evolves during training."""
    vectors, labels = embed_pass(model, split, params), split.labels
    s = singular_values(vectors)
    top = s[:3] / s.sum()
    return {
        "train_rho": spectral_decay(vectors, 0),
        "train_rho_skip1": spectral_decay(vectors, 1),
        "train_pi_ratio": embedding_density(vectors, labels)["pi_ratio"],
        **{f"train_sv{i + 1}": float(v) for i, v in enumerate(top)},
    }


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.default_rng([seed, epoch, stream]).integers(2**62))


@dataclass
class TrainingSetup:
    """Everything one training run is made of, built from params (shared with the benchmark's
    bare loop, so both train exactly the same thing)."""

    model: EmbeddingModel
    criterion: Loss
    miner: Miner
    sampler: BatchSampler
    storage: EmbeddingStorage | None  # the embedded samplers' view of the training set; else None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # a no-op unless train.amp is fp16 on CUDA
    batches: EpochBatches  # the loader's batch sampler, set for each epoch
    loader: DataLoader
    labels: torch.Tensor  # contiguous class ids of the training split, on the device
    device: torch.device


def build_training(params: Params, train_split: ImageSource, stats: Stats, init: PretrainedBackbone | None = None) -> TrainingSetup:
    """``init``: start the backbone from the pretrain stage's features (the head stays fresh)."""
    cfg = params.train
    torch.manual_seed(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if len(train_split) < cfg.batch_size:
        raise ConfigError(f"train.batch_size: {cfg.batch_size} exceeds the {len(train_split)} training images (not one batch per epoch)")
    device = resolve_device(cfg.device)
    labels_np, num_classes = contiguous_labels(train_split.labels)
    model = build_model(params.model, stats.channels, stats.mean, stats.std)  # built on the CPU: same init everywhere
    if init is not None:
        try:
            model.features.load_state_dict(init.features)
        except RuntimeError as err:
            raise ConfigError(f"model.name: the pretrained backbone does not fit {params.model.name!r} "
                              f"({str(err).splitlines()[0]}); rerun stage pretrain") from None
    criterion = build_loss(params.loss, num_classes, params.model.embed_dim)
    place_model(model, device)
    criterion.to(device)
    storage = build_storage(params.sampler, len(labels_np), params.model.embed_dim, device, cfg.batch_size)
    optimizer = lookup(OPTIMIZERS, "optim.name", params.optim.name)(
        [{"params": model.parameters()}, *criterion.param_groups(params.optim.lr)],
        lr=params.optim.lr,
        weight_decay=params.optim.weight_decay,
    )
    sampler = build_sampler(params.sampler, labels_np, cfg.batch_size, storage)
    batches = EpochBatches(sampler)
    return TrainingSetup(
        model=model,
        criterion=criterion,
        miner=build_miner(params.miner, cfg.seed),
        sampler=sampler,
        storage=storage,
        optimizer=optimizer,
        scaler=grad_scaler(device, cfg.amp),
        batches=batches,
        loader=train_loader(train_split, params.transforms, batches, device, params.loader.num_workers, params.loader.prefetch_factor),
        labels=torch.from_numpy(labels_np).to(device),
        device=device,
    )


def seed_epoch(setup: TrainingSetup, seed: int, epoch: int) -> None:
    """Re-seed every random stream for ``epoch``: the miner's, the loss's, the batch sampler's and
    the augmentation seeds of the epoch's images."""
    setup.miner.manual_seed(_epoch_seed(seed, epoch, 1))
    setup.criterion.manual_seed(_epoch_seed(seed, epoch, 3))
    setup.batches.start(np.random.default_rng([seed, epoch]), _epoch_seed(seed, epoch, 2))


def training_step(setup: TrainingSetup, params: Params, images: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """Forward (under autocast), mine and score in float32; returns the loss and the tuple count
    (None without a miner). The caller checks the loss before stepping."""
    device = setup.device
    with autocast(device, params.train.amp):
        embeddings = setup.model(place_images(images, device))
    embeddings = embeddings.float()
    if setup.storage is not None:  # later batches are chosen from the updated storage
        setup.storage.record(index.numpy(), embeddings)
    batch_labels = setup.labels[index.to(device)]
    tuples = setup.miner(embeddings, batch_labels)
    return setup.criterion(embeddings, batch_labels, tuples), (len(tuples) if tuples is not None else None)


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
    ``val_split`` (held-out training classes) and ``test_split`` are embedded after every epoch
    for the curve's Recall@1 when given. ``init``: the pretrained backbone to start from."""
    cfg = params.train
    if cfg.selection == "val" and val_split is None:
        raise ConfigError("train.selection: val chooses the epoch on the validation split, but the data has none (set data.val_classes > 0)")
    selection = "val" if val_split is not None and cfg.selection != "last" else "last"
    # small splits are decoded once (every epoch reads them, and the monitored ones every epoch too)
    train_split = in_memory(train_split, params.loader.in_memory_mib)
    val_split = in_memory(val_split, params.loader.in_memory_mib) if val_split is not None else None
    test_split = in_memory(test_split, params.loader.in_memory_mib) if test_split is not None else None
    setup = build_training(params, train_split, stats, init)
    model, criterion, miner, sampler, optimizer = setup.model, setup.criterion, setup.miner, setup.sampler, setup.optimizer
    storage = setup.storage

    fingerprint = training_fingerprint(params, stats, init)
    curve: list[EpochRecord] = []
    start_epoch = 0
    best: dict | None = None  # selection "val": {"epoch", "score", "model"} of the best epoch so far
    state = read_checkpoint(checkpoint, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state["loss"])
        criterion.generator.set_state(state["loss_rng"])
        miner.load_state_dict(state["miner_rng"])
        optimizer.load_state_dict(state["optimizer"])
        setup.scaler.load_state_dict(state.get("scaler", {}))
        if storage is not None:
            storage.load_state_dict(state["storage"])
        curve = [EpochRecord(**record) for record in state["curve"]]
        best = state.get("best")
        start_epoch = len(curve)
        attempt = state["attempt"]
        print(f"resuming training from {checkpoint} after epoch {start_epoch}/{cfg.epochs}")
    if on_start is not None:
        on_start(fingerprint, attempt, list(curve))

    sample_split = train_split.subset(spectrum_sample(train_split.labels, cfg.spectrum_sample, cfg.seed))

    def spectrum_due(epoch: int) -> bool:
        return cfg.spectrum_every > 0 and ((epoch + 1) % cfg.spectrum_every == 0 or epoch + 1 == cfg.epochs)

    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        seed_epoch(setup, cfg.seed, epoch)
        started = time.perf_counter()
        if storage is not None:
            storage.flush()
            if storage.refresh_due(epoch):  # the initial fill counts in epoch 1's time
                storage.refresh(torch.from_numpy(embed_pass(model, train_split, params, storage.batch_size)))
        total_loss = total_tuples = 0.0
        bar = tqdm(setup.loader, total=len(sampler), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
        for step, (images, index) in enumerate(bar):
            loss, tuples = training_step(setup, params, images, index)
            value = loss.item()
            if not math.isfinite(value):
                # Stop before the step corrupts the weights; the last checkpoint and every
                # previous output stay as they are.
                raise TrainingError(
                    f"training diverged: loss {value} at epoch {epoch + 1}, batch {step + 1} "
                    f"(loss.name={params.loss.name}, optim.lr={params.optim.lr}); lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            setup.scaler.scale(loss).backward()
            setup.scaler.step(optimizer)
            setup.scaler.update()
            total_loss += value
            total_tuples += tuples or 0
        seconds = time.perf_counter() - started
        if params.miner.knobs.produces and total_tuples == 0:
            raise TrainingError(
                f"epoch {epoch + 1}: miner.name={params.miner.name!r} found no tuple in any batch "
                f"(each batch needs two samples of a class and another class); check the sampler and batch size"
            )
        record = EpochRecord(
            epoch=epoch + 1,
            loss=total_loss / len(sampler),
            tuples_per_batch=total_tuples / len(sampler) if params.miner.knobs.produces else None,
            beta_mean=criterion.monitored().get("beta_mean"),
            seconds=seconds,
            test_recall_at_1=quick_recall_at_1(model, test_split, params) if test_split is not None else None,
            val_recall_at_1=quick_recall_at_1(model, val_split, params) if val_split is not None else None,
            **(embedding_space(model, sample_split, params) if spectrum_due(epoch) else {}),
        )
        curve.append(record)
        if selection == "val" and (best is None or record.val_recall_at_1 > best["score"]):  # ties: the earlier epoch
            best = {"epoch": record.epoch, "score": record.val_recall_at_1,
                    "model": {key: value.detach().clone() for key, value in model.state_dict().items()}}
        if progress:
            r1 = "".join(f", {name} R@1 {value:.3f}" for name, value in
                         (("val", record.val_recall_at_1), ("test", record.test_recall_at_1)) if value is not None)
            print(f"epoch {record.epoch}: loss {record.loss:.4f}{r1} ({seconds:.1f} s)", flush=True)
        if checkpoint is not None:
            with atomic_file(checkpoint) as tmp:
                torch.save(
                    {
                        "fingerprint": fingerprint,
                        "attempt": attempt,
                        "model": model.state_dict(),
                        "loss": criterion.state_dict(),
                        "loss_rng": criterion.generator.get_state(),
                        "miner_rng": miner.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": setup.scaler.state_dict(),
                        "curve": [asdict(r) for r in curve],
                        "best": best,
                        **({"storage": storage.state_dict()} if storage is not None else {}),
                    },
                    tmp,
                )
        if on_epoch is not None:
            on_epoch(record)
    selected_epoch = curve[-1].epoch
    if best is not None:
        model.load_state_dict(best["model"])
        selected_epoch = best["epoch"]
    model.eval()
    return TrainResult(model=model, curve=curve, criterion=criterion, selected_epoch=selected_epoch, selection=selection)
