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
from dml.errors import DatasetError
from dml.io import atomic_file, file_sha256, safe_load
from dml.models import EmbeddingModel, build_model
from dml.samplers.basic import RandomSampler
from dml.training.loop import Fit, epoch_seed, fit


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


def pretrain_fingerprint(params: Params, stats: Stats) -> str:
    """Identifies a pretraining: its section, the backbone, the transforms, the device settings and
    the data (``stats.sha256`` covers the source split). A checkpoint resumes only the same."""
    content = {"pretrain": params.pretrain.model_dump(mode="json"), "model": params.model.model_dump(mode="json"),
               "transforms": params.transforms.model_dump(mode="json"), "device": [params.train.device, params.train.amp, params.train.num_threads],
               "data": asdict(stats)}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class SourceClassification(Fit[PretrainEpoch]):
    """The backbone plus a linear classifier of the source classes, trained with cross-entropy on
    uniformly shuffled batches."""

    record_type = PretrainEpoch
    records_key = "record"

    def __init__(self, params: Params, source: ImageSource, stats: Stats) -> None:
        cfg = self.cfg = params.pretrain
        self.amp = params.train.amp
        torch.manual_seed(cfg.seed)
        if params.train.num_threads:
            torch.set_num_threads(params.train.num_threads)
        self.device = device = resolve_device(params.train.device)
        classes, labels = np.unique(source.labels, return_inverse=True)
        self.model = build_model(params.model, stats.channels, stats.mean, stats.std)
        self.classifier = nn.Linear(self.model.head.in_features, len(classes))
        place_model(self.model, device)
        self.classifier.to(device)
        self.optimizer = torch.optim.Adam([*self.model.features.parameters(), *self.classifier.parameters()],
                                          lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = grad_scaler(device, params.train.amp)
        self.epoch_batches = EpochBatches(RandomSampler(labels, cfg.batch_size))
        source = in_memory(source, params.loader.in_memory_mib)
        self.loader = train_loader(source, params.transforms, self.epoch_batches, device,
                                   params.loader.num_workers, params.loader.prefetch_factor)
        self.targets = torch.from_numpy(labels.astype(np.int64)).to(device)
        self.total_loss = self.correct = self.seen = 0.0

    def seed_epoch(self, epoch: int) -> None:
        self.epoch_batches.start(np.random.default_rng([self.cfg.seed, epoch, 4]), epoch_seed(self.cfg.seed, epoch, 5))

    def batch_loss(self, images: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        targets = self.targets[index.to(self.device)]
        with autocast(self.device, self.amp):
            logits = self.classifier(self.model.backbone_features(place_images(images, self.device)))
        return F.cross_entropy(logits.float(), targets), (logits, targets)

    def step_done(self, loss: float, counts: tuple[torch.Tensor, torch.Tensor]) -> None:
        logits, targets = counts
        self.total_loss += loss * len(targets)
        self.correct += float((logits.argmax(1) == targets).sum())
        self.seen += len(targets)

    def end_epoch(self, epoch: int, seconds: float) -> PretrainEpoch:
        record = PretrainEpoch(epoch + 1, self.total_loss / self.seen, self.correct / self.seen, seconds)
        self.total_loss = self.correct = self.seen = 0.0
        return record

    def diverged(self, loss: float, epoch: int, step: int) -> str:
        return f"pretraining diverged: loss {loss} at epoch {epoch + 1} (pretrain.lr={self.cfg.lr}); lower it"

    def describe(self, record: PretrainEpoch) -> str:
        return (f"pretrain epoch {record.epoch}/{self.cfg.epochs}: loss {record.loss:.4f}, "
                f"accuracy {record.accuracy:.3f} ({record.seconds:.1f} s)")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "classifier": self.classifier.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.classifier.load_state_dict(state["classifier"])


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
    run = SourceClassification(params, source, stats)
    record = fit(run, cfg.epochs, fingerprint=pretrain_fingerprint(params, stats), checkpoint=checkpoint,
                 on_epoch=on_epoch, progress=progress, name="pretrain epoch", what="pretraining checkpoint")
    return run.model.cpu(), record


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
