"""Trackers: the records of one MLflow run in its outbox, and the run of one training attempt
(bound to the training fingerprint and an attempt id kept in the checkpoint)."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from dml.config import Params
from dml.tracking.naming import SWEEP_RUN_ENV, flat_params, run_name, run_tags
from dml.tracking.outbox import TERMINAL, Outbox, all_outboxes, outbox_root
from dml.tracking.store import tracking_uri
from dml.tracking.sync import now_ms, sync_all

# Per-epoch curve columns (metrics/train_curve.csv, EpochRecord fields) -> MLflow metric names.
CURVE_METRICS = {
    "loss": "train/loss",
    "tuples_per_batch": "train/tuples_per_batch",
    "beta_mean": "train/beta_mean",
    "seconds": "train/epoch_seconds",
    "test_recall_at_1": "train/test_recall_at_1",
    "val_recall_at_1": "train/val_recall_at_1",
    "train_rho": "train/rho",
    "train_rho_skip1": "train/rho_skip1",
    "train_pi_ratio": "train/pi_ratio",
    "train_sv1": "train/sv1",
    "train_sv2": "train/sv2",
    "train_sv3": "train/sv3",
}
TRAINING_PREFIX = "train-"
METRICS_PER_RECORD = 900  # below MLflow's 1000 per log_batch


def training_key(fingerprint: str, attempt: str) -> str:
    return f"{TRAINING_PREFIX}{fingerprint[:16]}-{attempt}"


def new_attempt() -> str:
    return uuid.uuid4().hex[:12]


class Tracker:
    """Records of one MLflow run, written to its outbox and synced when the store answers."""

    def __init__(self, params: Params, key: str, head: dict[str, Any] | None = None) -> None:
        """``head``: the run's ``name``, ``tags`` and ``params`` when they are not the pipeline's
        (a sweep's parent run); recorded only when the run's outbox is opened the first time."""
        self.uri = tracking_uri(params.tracking)
        self.experiment = params.tracking.experiment
        self.outbox = Outbox(outbox_root(), key)
        self.outbox.claim()  # before the first record: a concurrent training then sees this run alive
        self.run_id: str | None = None
        self._warned = False
        new = not self.outbox.exists()
        if self.outbox.head() is None:  # a new run, or its opening record was damaged (kept aside): recorded anew
            head = head or {"name": run_name(params), "tags": run_tags(params), "params": flat_params(params)}
            self.outbox.append("run", time=now_ms(), experiment=self.experiment, **head)
        parent = os.environ.get(SWEEP_RUN_ENV)
        if new and parent and parent != key:  # nested under the sweep's run, resolved when synced
            self.outbox.append("link_parent", run_key=parent, experiment=self.experiment)

    @property
    def key(self) -> str:
        return self.outbox.key

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.log_points([(key, value, step) for key, value in metrics.items()])

    def log_points(self, points: list[tuple[str, float, int]]) -> None:
        """Metric points ``(name, value, step)``, in records that fit one MLflow request."""
        stamped = [[key, float(value), int(step), now_ms()] for key, value, step in points]
        for start in range(0, len(stamped), METRICS_PER_RECORD):
            self.outbox.append("metrics", metrics=stamped[start : start + METRICS_PER_RECORD])

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.outbox.append_artifact(Path(path), artifact_path)

    def log_model(self, folder: Path, artifact_path: str, registered_name: str) -> None:
        """An MLflow model folder (dml/serving.py) as the run's ``artifact_path``, registered as a
        new version of ``registered_name`` (one version per run, however often it is synced)."""
        self.outbox.append_artifact_dir(Path(folder), artifact_path)
        self.outbox.append("register", name=registered_name, artifact_path=artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.outbox.append("tags", tags=tags)

    def set_status(self, status: str) -> None:
        self.outbox.append("status", status=status, time=now_ms())

    def sync(self) -> bool:
        """Send pending records (every outbox's: older runs first); on failure warn once and keep
        them. Returns whether this run is fully in MLflow."""
        try:
            done = sync_all(self.uri, self.outbox.root)
        except Exception as err:  # noqa: BLE001 - any store failure: the records wait in the outbox
            if not self._warned:
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                print(f"warning: MLflow store {self.uri} not reachable ({first_line[:200]}); records wait in "
                      f"{self.outbox.root} and are sent later (python -m dml.tracking sync)", file=sys.stderr)
                self._warned = True
            return False
        self.run_id = done.get(self.key, self.run_id)
        return not self.outbox.pending()

    def reference(self) -> dict[str, Any]:
        return {"run_key": self.key, "run_id": self.run_id, "experiment": self.experiment, "tracking_uri": self.uri}


class TrainingRun(Tracker):
    """The MLflow run of one training attempt (see :mod:`dml.tracking`)."""

    def __init__(self, params: Params, fingerprint: str, attempt: str, restored_curve: list[dict[str, Any]] = ()) -> None:
        key = training_key(fingerprint, attempt)
        resumed = Outbox(outbox_root(), key).exists()
        super().__init__(params, key)
        _mark_abandoned_trainings(self.outbox.root, keep=key)
        if resumed:
            self.set_status("RUNNING")
        # Epochs restored from the checkpoint whose records the killed process did not write.
        for record in restored_curve:
            self.log_epoch(record["epoch"], record)
        self.sync()

    def log_epoch(self, step: int, record: dict[str, Any]) -> None:
        """One row of the training curve (keys as in :data:`CURVE_METRICS`; None = not measured).
        An epoch already in the outbox is not recorded again (a resumed run recomputes it
        bit-identically)."""
        if step in self.outbox.logged_steps(CURVE_METRICS["loss"]):
            return
        self.log_metrics({name: record[column] for column, name in CURVE_METRICS.items() if record.get(column) is not None}, step)

    def finish(self, status: str = "FINISHED") -> None:
        self.set_status(status)
        self.sync()
        self.outbox.release()


def _mark_abandoned_trainings(root: Path, keep: str) -> None:
    """Training runs whose process died without a word (SIGKILL, power loss) and that no
    checkpoint will resume are marked KILLED instead of staying RUNNING forever. A run whose
    writer is alive (a concurrent experiment's training holds its outbox) is left alone."""
    for outbox in all_outboxes(root):
        if outbox.key.startswith(TRAINING_PREFIX) and outbox.key != keep and outbox.status() not in TERMINAL and outbox.claim():
            outbox.append("status", status="KILLED", time=now_ms())
            outbox.release()
