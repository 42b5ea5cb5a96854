"""Stage train: fit the embedding model on the train classes.

Writes the model, its per-epoch curve and final train metrics; logs the curve live to MLflow.
Epoch checkpoints let an interrupted run resume where it stopped.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, fields

from dml.config import Params
from dml.data.arrays import load_split, load_stats
from dml.config import ConfigError
from dml.io import atomic_file, read_json, write_json
from dml.models.checkpoint import save_model
from dml.paths import (
    CHECKPOINT,
    CHECKPOINT_RUN,
    MODEL,
    PREPROCESSED,
    TRAIN_CONFIG,
    TRAIN_CURVE,
    TRAIN_METRICS,
    TRAIN_RUN,
)
from dml.tracking import TrainingRun
from dml.training import EpochRecord, train
from stages._common import run_stage


def write_curve(curve: list[EpochRecord]) -> None:
    with atomic_file(TRAIN_CURVE) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(EpochRecord)])
        writer.writeheader()
        writer.writerows(asdict(record) for record in curve)


def check_config_is_current(params: Params) -> None:
    """DVC decides whether to retrain from configs/train.json; training from params.yaml is honest
    only if that file says the same (it is stale if the train stage runs without configure)."""
    if not TRAIN_CONFIG.is_file() or read_json(TRAIN_CONFIG) != params.training_config():
        raise ConfigError(f"{TRAIN_CONFIG} is missing or stale for params.yaml; run `dvc repro` (or `python -m stages.configure`) first")


def train_stage(params: Params) -> None:
    check_config_is_current(params)
    stats = load_stats(PREPROCESSED)
    train_split = load_split(PREPROCESSED, "train")
    eval_split = load_split(PREPROCESSED, "test") if params.train.track_test_recall else None
    # A resumed run continues the MLflow run of the interrupted one.
    resume_id = read_json(CHECKPOINT_RUN).get("run_id") if CHECKPOINT.is_file() and CHECKPOINT_RUN.is_file() else None
    tracker = TrainingRun(params, resume_run_id=resume_id)
    write_json(CHECKPOINT_RUN, tracker.reference())

    def on_epoch(record: EpochRecord) -> None:
        tracker.log_epoch(record.epoch, asdict(record))

    started = time.perf_counter()
    try:
        result = train(params, train_split, stats, eval_split=eval_split, checkpoint=CHECKPOINT, on_epoch=on_epoch)
    except BaseException:
        tracker.finish("KILLED")
        raise
    seconds = time.perf_counter() - started
    save_model(MODEL, result.model, params, stats)
    if params.tracking.log_model:
        tracker.log_model(MODEL)
    tracker.finish()
    write_curve(result.curve)
    last = result.curve[-1]
    write_json(TRAIN_METRICS, {
        "final_loss": last.loss,
        "epochs": len(result.curve),
        "train_seconds": round(seconds, 2),
        "test_recall_at_1_last_epoch": last.test_recall_at_1,
    })
    write_json(TRAIN_RUN, tracker.reference())
    CHECKPOINT.unlink(missing_ok=True)
    CHECKPOINT_RUN.unlink(missing_ok=True)


def main() -> None:
    run_stage("train", train_stage)


if __name__ == "__main__":
    main()
