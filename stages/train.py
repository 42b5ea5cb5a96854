"""Stage train: fit the embedding model on the train classes.

Writes the model, its per-epoch curve and final train metrics; logs the curve live to MLflow.
Epoch checkpoints let an interrupted run resume where it stopped. Which MLflow run trained the
model, and the wall-clock times, go to the git-ignored .dml/ (dml/paths.py), not to DVC outputs.

With ``distributed.nproc_per_node x distributed.nnodes > 1`` the stage starts its workers through
torch's elastic agent, each running this module again as one rank (dml/training/distributed.py);
rank 0 alone tracks and writes.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, fields

from dml.config import Params
from dml.data.loading import load_splits
from dml.device import resolve_device
from dml.data.stats import load_stats
from dml.errors import ConfigError, DatasetError
from dml.io import atomic_file, read_json, write_json
from dml.model_file import save_model
from dml.paths import (
    CHECKPOINT,
    MODEL,
    PREPROCESSED,
    PRETRAINED,
    TIMINGS,
    TRAIN_CONFIG,
    TRAIN_CURVE,
    TRAIN_METRICS,
)
from dml.tracking import TrainingRun, new_attempt, remember_model_run
from dml.training.distributed import World, finish, in_worker, init, launch, peer_lost
from dml.training.metric import EpochRecord, train
from dml.training.pretrain import load_pretrained
from stages._common import run_stage


def write_curve(curve: list[EpochRecord]) -> None:
    """The per-epoch curve without wall-clock seconds (those go to the timings file), so that the
    same training writes the same file on any machine."""
    columns = [f.name for f in fields(EpochRecord) if f.name != "seconds"]
    with atomic_file(TRAIN_CURVE) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(asdict(record) for record in curve)


def check_config_is_current(params: Params) -> None:
    """DVC decides whether to retrain from configs/train.json; training from params.yaml is honest
    only if that file says the same (it is stale if the train stage runs without configure)."""
    if not TRAIN_CONFIG.is_file() or read_json(TRAIN_CONFIG) != params.training_config():
        raise ConfigError(f"{TRAIN_CONFIG} is missing or stale for params.yaml; run `dvc repro` (or `python -m stages.configure`) first")


def train_stage(params: Params) -> None:
    check_config_is_current(params)
    if params.distributed.world_size > 1 and not in_worker():
        launch(params.distributed, "stages.train", "train")
        return
    if not in_worker():
        fit_and_write(params)
        return
    world = init(params.distributed, resolve_device(params.train.device), params.train.num_threads)
    try:
        fit_and_write(params, world)
    except Exception as err:
        finish(clean=False)
        if peer_lost(err):
            raise SystemExit(1) from None  # another rank stopped first; the launcher says which, in one line
        raise
    finish()


def fit_and_write(params: Params, world: World = World()) -> None:
    """Train (this process's rank of it) and, on rank 0, track and write every output."""
    stats = load_stats(PREPROCESSED)
    splits = load_splits(PREPROCESSED)
    if "train" not in splits:
        raise DatasetError(f"{PREPROCESSED}: the manifest has no 'train' images")
    train_split, val_split = splits["train"], splits.get("val")
    # Monitoring only, and only when asked: the test classes never choose anything.
    test_split = splits.get("test") if params.train.track_test_recall else None
    init = load_pretrained(PRETRAINED)  # None: the backbone's own initialisation
    tracker: TrainingRun | None = None

    def on_start(fingerprint: str, attempt: str, restored: list[EpochRecord]) -> None:
        # Only once training is set up: a config that cannot train opens no tracking run. A
        # resumed training continues its own run (the checkpoint's attempt id, resumed only with
        # the same fingerprint); a fresh one opens a new run.
        nonlocal tracker
        tracker = TrainingRun(params, fingerprint, attempt, restored_curve=[asdict(r) for r in restored])

    def on_epoch(record: EpochRecord) -> None:
        tracker.log_epoch(record.epoch, asdict(record))
        tracker.sync()

    started = time.perf_counter()
    if not world.writer:
        train(params, train_split, stats, test_split=test_split, val_split=val_split, checkpoint=CHECKPOINT,
              progress=False, init=init)
        return
    try:
        result = train(params, train_split, stats, test_split=test_split, val_split=val_split, checkpoint=CHECKPOINT,
                       on_start=on_start, on_epoch=on_epoch, attempt=new_attempt(), init=init)
    except BaseException as err:
        if tracker is not None:
            tracker.finish("FAILED" if isinstance(err, Exception) else "KILLED")
        raise
    seconds = time.perf_counter() - started
    save_model(MODEL, result.model, params, stats)
    if params.tracking.log_model:
        tracker.log_artifact(MODEL, "model")
    tracker.finish()
    write_curve(result.curve)
    last = result.curve[-1]
    write_json(TRAIN_METRICS, {
        "final_loss": last.loss,
        "epochs": len(result.curve),
        "initialisation": "pretrained on source" if init is not None else "backbone default",
        "test_recall_at_1_last_epoch": last.test_recall_at_1,
        "val_recall_at_1_last_epoch": last.val_recall_at_1,
        # the model is this epoch's weights: best validation Recall@1, or the last epoch
        "selected_epoch": result.selected_epoch,
        "selection": result.selection,
        # The paper code's practice, reported apart because it is optimistic: the best test R@1
        # over epochs chooses the epoch on the test classes themselves.
        "test_recall_at_1_max_over_epochs": max((r.test_recall_at_1 for r in result.curve if r.test_recall_at_1 is not None), default=None),
    })
    remember_model_run(MODEL, tracker)  # for the report; machine-local, not a DVC output
    TIMINGS.mkdir(parents=True, exist_ok=True)
    write_json(TIMINGS / "train.json", {"train_seconds": round(seconds, 2), "epoch_seconds": [round(r.seconds, 2) for r in result.curve]})
    CHECKPOINT.unlink(missing_ok=True)


def main() -> None:
    run_stage("train", train_stage)


if __name__ == "__main__":
    main()
