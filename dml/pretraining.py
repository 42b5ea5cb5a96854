"""Pretraining: the backbone learns to classify a disjoint *source* set, then DML training starts
from those features (the embedded analogue of the paper's ImageNet-pretrained backbones).

The source classes are neither train nor test classes (``data.glyphs.source_fraction``, or a
manifest's split ``source``). A linear classifier over the pooled backbone features is trained
with cross-entropy on uniformly shuffled batches and the training transforms; only the backbone
(``model.features``) is kept: the embedding head of the DML model starts fresh, as the paper
replaces ResNet's classifier. Reproducible on CPU: the batch order and each image's augmentation
are seeded from ``(pretrain.seed, epoch)``, like training's, so a run interrupted after an epoch
and resumed from its checkpoint ends with exactly the uninterrupted weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dml.config import Params
from dml.data.loading import EpochBatches, ImageSource, in_memory, train_loader
from dml.data.stats import Stats
from dml.device import autocast, grad_scaler, place_images, place_model, resolve_device
from dml.errors import DatasetError, TrainingError
from dml.io import atomic_file, file_sha256, safe_load
from dml.models import EmbeddingModel, build_model
from dml.samplers.basic import RandomSampler


@dataclass(frozen=True)
class PretrainedBackbone:
    """What train starts from: the backbone's state dict and the SHA-256 of the file it came from
    (part of the training fingerprint, so a checkpoint never resumes onto other features)."""

    features: Mapping[str, torch.Tensor]
    sha256: str


@dataclass(frozen=True)
class PretrainEpoch:
    epoch: int
    loss: float
    accuracy: float  # share of the epoch's (augmented) source images classified correctly, in training mode
    seconds: float


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, epoch, 5]).integers(2**62))


def pretrain_fingerprint(params: Params, stats: Stats) -> str:
    """Identifies a pretraining: its section, the backbone, the transforms, the device settings and
    the data (``stats.sha256`` covers the source split). A checkpoint resumes only the same."""
    content = {"pretrain": params.pretrain.model_dump(mode="json"), "model": params.model.model_dump(mode="json"),
               "transforms": params.transforms.model_dump(mode="json"), "device": [params.train.device, params.train.amp, params.train.num_threads],
               "data": asdict(stats)}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def pretrain(params: Params, source: ImageSource, stats: Stats, progress: bool = True, checkpoint: Path | None = None,
             on_epoch: Callable[[PretrainEpoch], None] | None = None) -> tuple[EmbeddingModel, list[PretrainEpoch]]:
    """Train ``params.model``'s backbone as a classifier of the source split's classes for
    ``pretrain.epochs`` epochs; returns the model (its head untrained) and the per-epoch record.
    With ``checkpoint``: saved after every epoch, resumed from when it belongs to this pretraining."""
    cfg = params.pretrain
    if cfg.epochs == 0:
        raise ValueError("pretrain.epochs is 0: nothing to pretrain")
    if len(source) < cfg.batch_size:
        raise DatasetError(f"pretrain.batch_size: {cfg.batch_size} exceeds the {len(source)} source images")
    torch.manual_seed(cfg.seed)
    if params.train.num_threads:
        torch.set_num_threads(params.train.num_threads)
    device = resolve_device(params.train.device)
    classes, labels = np.unique(source.labels, return_inverse=True)
    model = build_model(params.model, stats.channels, stats.mean, stats.std)
    classifier = nn.Linear(model.head.in_features, len(classes))
    place_model(model, device)
    classifier.to(device)
    optimizer = torch.optim.Adam([*model.features.parameters(), *classifier.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, params.train.amp)
    batches = EpochBatches(RandomSampler(labels, cfg.batch_size))
    source = in_memory(source, params.loader.in_memory_mib)
    loader = train_loader(source, params.transforms, batches, device, params.loader.num_workers, params.loader.prefetch_factor)
    targets_all = torch.from_numpy(labels.astype(np.int64)).to(device)
    record: list[PretrainEpoch] = []
    fingerprint = pretrain_fingerprint(params, stats)
    state = safe_load(checkpoint, "pretraining checkpoint") if checkpoint is not None and Path(checkpoint).is_file() else None
    if state is not None and state.get("fingerprint") == fingerprint:
        model.load_state_dict(state["model"])
        classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        record = [PretrainEpoch(**r) for r in state["record"]]
        print(f"resuming pretraining from {checkpoint} after epoch {len(record)}/{cfg.epochs}")
    model.train()
    for epoch in range(len(record), cfg.epochs):
        batches.start(np.random.default_rng([cfg.seed, epoch, 4]), _epoch_seed(cfg.seed, epoch))
        started = time.perf_counter()
        total_loss = correct = seen = 0.0
        for images, index in loader:
            targets = targets_all[index.to(device)]
            with autocast(device, params.train.amp):
                logits = classifier(model.backbone_features(place_images(images, device)))
            loss = F.cross_entropy(logits.float(), targets)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(f"pretraining diverged: loss {value} at epoch {epoch + 1} (pretrain.lr={cfg.lr}); lower it")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += value * len(targets)
            correct += float((logits.argmax(1) == targets).sum())
            seen += len(targets)
        record.append(PretrainEpoch(epoch + 1, total_loss / seen, correct / seen, time.perf_counter() - started))
        if checkpoint is not None:
            with atomic_file(checkpoint) as tmp:
                torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "classifier": classifier.state_dict(),
                            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                            "record": [asdict(r) for r in record]}, tmp)
        if progress:
            last = record[-1]
            print(f"pretrain epoch {last.epoch}/{cfg.epochs}: loss {last.loss:.4f}, accuracy {last.accuracy:.3f} ({last.seconds:.1f} s)", flush=True)
        if on_epoch is not None:
            on_epoch(record[-1])
    model.eval()
    return model.cpu(), record


def save_pretrained(path: Path, model: EmbeddingModel | None, info: dict) -> None:
    """The backbone's state dict (or None: pretraining is off) and what it was trained on."""
    payload = {"features": None if model is None else {k: v.detach().cpu() for k, v in model.features.state_dict().items()},
               "info": info}
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def load_pretrained(path: Path) -> PretrainedBackbone | None:
    """The pretrain stage's backbone, or None when pretraining is off."""
    if not Path(path).is_file():
        raise DatasetError(f"{path}: missing; run `dvc repro` (stage pretrain) first")
    payload = safe_load(path, "pretrained backbone")
    if not isinstance(payload, dict) or "features" not in payload:
        raise DatasetError(f"{path}: not a pretrained backbone this pipeline wrote; delete it and rerun stage pretrain")
    if payload["features"] is None:
        return None
    return PretrainedBackbone(payload["features"], file_sha256(path))
