"""MLflow tracking: one MLflow run per pipeline result.

* The train stage opens the run and logs params and per-epoch curves live (visible in
  ``mlflow ui`` while training runs), and logs the model file once.
* The report stage adds the final metrics and plots. The first result of a trained model lands
  in the training run itself; a later result of the same model (say, after an eval-only change)
  becomes a new run that carries the params, copies the curves and links the training run that
  holds the model (tag ``dml.model_run_id``).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dml.config import Params, TrackingConfig, repo_root

# Offline by default: no telemetry, and a remote tracking server that does not answer fails
# fast instead of retrying for minutes.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

# Per-epoch curve columns (metrics/train_curve.csv, EpochRecord fields) -> MLflow metric names.
CURVE_METRICS = {
    "loss": "train_loss",
    "tuples_per_batch": "tuples_per_batch",
    "beta_mean": "beta_mean",
    "seconds": "epoch_seconds",
    "test_recall_at_1": "test_recall_at_1",
}

RESULT_TAG = "dml.result_logged"
MODEL_RUN_TAG = "dml.model_run_id"
MODEL_FILE_TAG = "dml.model_file"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (one line naming the URI)."""


def tracking_uri(cfg: TrackingConfig) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri``, else an absolute SQLite file at the
    repository root (absolute so that temporary experiment workspaces log to the same store)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    return uri or f"sqlite:///{repo_root() / 'mlflow.db'}"


def check_reachable(uri: str) -> None:
    """Fail in a second, with one line, when the store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({getattr(err, 'reason', err)})") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow tracking store {uri}: folder {folder} is missing or not writable")


def _open_store(params: Params) -> tuple[str, Any, str]:
    """(tracking URI, client, experiment id) for ``params.tracking``; fails fast if unreachable."""
    uri = tracking_uri(params.tracking)
    client = _client(uri)
    return uri, client, _experiment_id(client, params.tracking.experiment, uri)


def _client(uri: str):
    import mlflow

    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # Absolute, beside the database: a relative default would land in the (temporary)
        # working directory of the stage.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_tags() -> dict[str, str]:
    tags = {"git.commit": _git_commit()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def _run_name(params: Params) -> str:
    name = f"{params.loss.name}-{params.miner.name}"
    if params.miner.name == "rho_distance":
        name += f"{params.miner.rho_distance.p:g}"
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{exp}:{name}" if exp else name


def _log_batch(client, run_id: str, params: list | None = None, metrics: list | None = None) -> None:
    """``log_batch`` within MLflow's per-request limits (100 params, 1000 metrics)."""
    params, metrics = params or [], metrics or []
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _create_run(client, experiment_id: str, params: Params) -> str:
    """A new run named after its methods, tagged with commit and DVC experiment, with every
    param flattened (one batched call)."""
    from mlflow.entities import Param

    run = client.create_run(experiment_id, tags={**run_tags(), "mlflow.runName": _run_name(params)})
    _log_batch(client, run.info.run_id, params=[Param(k, str(v)) for k, v in params.flat().items()])
    return run.info.run_id


def _log_model_file(client, run_id: str, path: Path) -> None:
    client.log_artifact(run_id, str(path), artifact_path="model")
    client.set_tag(run_id, MODEL_FILE_TAG, f"model/{path.name}")


class TrainingRun:
    """The live MLflow run of a training stage."""

    def __init__(self, params: Params, resume_run_id: str | None = None) -> None:
        self.uri, self.client, self.experiment_id = _open_store(params)
        run = None
        if resume_run_id:
            try:
                run = self.client.get_run(resume_run_id)
            except Exception:  # noqa: BLE001 - a run from another store: start a new one
                run = None
        if run is None:
            self.run_id = _create_run(self.client, self.experiment_id, params)
        else:
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")

    def log_epoch(self, step: int, record: dict[str, Any]) -> None:
        """Log one row of the training curve (keys as in :data:`CURVE_METRICS`; None = not measured)."""
        for column, name in CURVE_METRICS.items():
            if record.get(column) is not None:
                self.client.log_metric(self.run_id, name, float(record[column]), step=step)

    def log_model(self, path: Path) -> None:
        _log_model_file(self.client, self.run_id, path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def reference(self) -> dict[str, str]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri}


def report_result(
    params: Params,
    training_run_id: str | None,
    metrics: dict[str, float],
    curves: dict[str, list[tuple[int, float]]],
    artifacts: list[Path],
    model_file: Path,
) -> dict[str, Any]:
    """Record one pipeline result; see the module docstring for which run it lands in."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    uri, client, experiment_id = _open_store(params)
    flat = {key: str(value) for key, value in params.flat().items()}
    training = None
    if training_run_id:
        try:
            training = client.get_run(training_run_id)
        except Exception:  # noqa: BLE001 - deleted run or another store
            training = None
    reuse = (
        training is not None
        and training.info.experiment_id == experiment_id
        and RESULT_TAG not in training.data.tags
        and training.data.params == flat  # a param changed since training: a result of its own
    )
    if reuse:
        run_id = training.info.run_id
    else:
        run_id = _create_run(client, experiment_id, params)
        _log_batch(client, run_id, metrics=[Metric(key, value, now, step) for key, points in curves.items() for step, value in points])
        if training is not None and MODEL_FILE_TAG in training.data.tags:
            client.set_tag(run_id, MODEL_RUN_TAG, training.info.run_id)
            client.set_tag(run_id, "dml.model_uri", f"runs:/{training.info.run_id}/{training.data.tags[MODEL_FILE_TAG]}")
        elif params.tracking.log_model:
            _log_model_file(client, run_id, model_file)
    _log_batch(client, run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])
    for path in artifacts:
        client.log_artifact(run_id, str(path), artifact_path="plots")
    client.set_tag(run_id, RESULT_TAG, "true")
    client.set_terminated(run_id, status="FINISHED")
    return {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri, "new_run": not reuse}
