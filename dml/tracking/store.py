"""Where tracking records go: the MLflow store's URI, a fast reachability check, the client."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from dml.config import TrackingConfig
from dml.errors import TrackingError
from dml.paths import repo_root

# Offline by default: no telemetry, and a remote tracking server that does not answer fails
# fast instead of retrying for minutes (the outbox keeps the records meanwhile).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


DESCRIPTION_TAG = "mlflow.note.content"  # what MLflow's UI shows as an experiment's or run's description
EXPERIMENT_DESCRIPTION = (
    "Results of the dml-pipeline (the protocol of Roth et al., ICML 2020, as a DVC pipeline). One run per "
    "training (curves: train/*) holding its pipeline result (eval/: retrieval and clustering on the unseen "
    "test classes, space/: spectral decay rho and embedding density), or a result run linked to its training. "
    "A run's name says what differs from the committed params.yaml, and the seed; its description gives the "
    "dataset, model, loss, miner, sampler and R@1. Sweeps: a parent run per study, its runs nested under it; "
    "group by tag dml.variant to average the seeds."
)
EXPERIMENT_TAGS = {DESCRIPTION_TAG: EXPERIMENT_DESCRIPTION}


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


def open_client(uri: str):
    import mlflow

    check_reachable(uri)
    return mlflow.MlflowClient(uri)


def experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        for tag, value in EXPERIMENT_TAGS.items():
            if tag not in experiment.tags:  # made by an older version, or by hand
                client.set_experiment_tag(experiment.experiment_id, tag, value)
        return experiment.experiment_id
    artifact_location = None
    uri = client.tracking_uri
    if uri.startswith("sqlite:///"):
        # Absolute, beside the database: a relative default would land in the (temporary)
        # working directory of the stage.
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)

