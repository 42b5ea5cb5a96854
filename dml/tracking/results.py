"""Pipeline results: which training run wrote a model file (by its content), and the run a
result lands in (the training run itself, or a new run linked to it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dml.config import Params
from dml.paths import repo_root
from dml.io import file_sha256, read_json, write_json
from dml.paths import MODEL_RUNS
from dml.tracking.naming import description, flat_params
from dml.tracking.outbox import Outbox, outbox_root
from dml.tracking.store import DESCRIPTION_TAG
from dml.tracking.runs import Tracker, new_attempt

# Metric names are grouped by prefix so that related numbers sort (and chart) together in MLflow:
# eval/ (retrieval and clustering), train/ (curves and training's own numbers), space/ (the
# embedding space: rho, pi), index/ (the index's build and search figures).
METRIC_GROUPS = ("eval", "train", "space", "index")
RESULT_TAG = "dml.result_logged"
# Numbers that describe the setup rather than measure the result: tags, not metrics, so that
# MLflow's charts open on the results.
SETUP_NUMBERS = ("eval/num_classes", "eval/num_gallery", "eval/num_queries", "eval/num_queries_without_positive",
                 "train/epochs", "train/selected_epoch", "index/dim", "index/ntotal", "index/threads", "index/timing_queries")


def registered_model_name(params: Params) -> str:
    """The model registry's name of the pipeline's embedding models: one per experiment, one
    version per result."""
    return f"{params.tracking.experiment}-embedding"


def _model_run_file(model_file: Path) -> Path:
    return repo_root() / MODEL_RUNS / f"{file_sha256(model_file)}.json"


def remember_model_run(model_file: Path, run: Tracker) -> None:
    """Record that ``run`` wrote ``model_file`` (by its content), for :func:`model_run_key`. Not a
    DVC output: run keys and ids differ per machine and run. Kept under the repository root
    (``DVC_ROOT``), so the report of a temporary experiment workspace finds the run, and so does a
    later report of the same model file (DVC restores it from its cache; an edit of tracking
    params reruns the report alone). A retraining that writes the same file byte for byte takes
    its place."""
    write_json(_model_run_file(model_file), run.reference())


def model_run_key(model_file: Path) -> str | None:
    """The outbox key of the training run that wrote ``model_file``, if this machine trained it."""
    path = _model_run_file(model_file)
    return read_json(path).get("run_key") if path.is_file() else None


def report_result(
    params: Params,
    training_run_key: str | None,
    metrics: dict[str, float],
    curves: dict[str, list[tuple[int, float]]],
    artifacts: list[Path],
    model_file: Path,
    mlflow_model: Path | None = None,
) -> dict[str, Any]:
    """Record one pipeline result; see :mod:`dml.tracking` for which run it lands in. With
    ``mlflow_model`` (a pyfunc folder, dml/serving.py), the result's run gets it as
    ``embedding_model`` and registers it as a new version of ``<experiment>-embedding``."""
    flat = flat_params(params)
    training = Outbox(outbox_root(), training_run_key) if training_run_key else None
    if training is not None and training.head() is None:  # gone, or its opening record damaged: no run to join
        training = None
    reuse = (
        training is not None
        and training.head()["experiment"] == params.tracking.experiment
        and not training.has_tag(RESULT_TAG)
        and training.head()["params"] == flat  # a param changed since training: a result of its own
    )
    if reuse:
        tracker = Tracker(params, training.key)
    else:
        tracker = Tracker(params, f"result-{new_attempt()}")
        tracker.log_points([(name, value, step) for name, points in curves.items() for step, value in points])
        if training is not None:
            tracker.outbox.append("link_model", run_key=training.key, experiment=training.head()["experiment"])
        elif params.tracking.log_model:
            tracker.log_artifact(model_file, "model")
    tracker.log_metrics({name: value for name, value in metrics.items() if name not in SETUP_NUMBERS})
    tracker.set_tags({**{name: str(value) for name, value in metrics.items() if name in SETUP_NUMBERS},
                      DESCRIPTION_TAG: description(params, metrics)})
    for path in artifacts:
        tracker.log_artifact(path, "plots")
    if mlflow_model is not None:
        tracker.log_model(mlflow_model, "embedding_model", registered_model_name(params))
    tracker.set_tags({RESULT_TAG: "true"})
    tracker.set_status("FINISHED")
    tracker.sync()
    return {**tracker.reference(), "new_run": not reuse}
