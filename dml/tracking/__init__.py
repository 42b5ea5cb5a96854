"""MLflow tracking through a local outbox: one MLflow run per pipeline result, never lost,
never duplicated, never mislabelled, with or without a reachable tracking server.

* The train stage opens a *training run* whose key is bound to the training fingerprint and an
  attempt id kept in the checkpoint: a resumed run continues its own run, a changed config
  always gets a new one. Params, per-epoch curves (complete after a resume) and the model file
  are recorded in the outbox and synced after every epoch when the store answers; an outage is
  one warning line and training goes on. A run killed without a trace (SIGKILL) is marked KILLED
  by the next training.
* The report stage adds the final metrics and plots. It finds the training run by the model
  file's content (:func:`remember_model_run`: ``.dml/model_runs/<sha256>.json`` under the
  repository root, machine-local state that is no DVC output). The first result of a trained
  model lands in the training run itself; a later result of the same model (say, after an
  eval-only change) becomes a new run that carries the params and curves and links the training
  run that holds the model (tag ``dml.model_run_id``).
* Records that could not be sent wait in ``.dml/outbox/``; the next stage that tracks, or
  ``python -m dml.tracking sync``, sends them.
"""

from __future__ import annotations

from dml.tracking.naming import (
    SWEEP_BASE_ENV,
    SWEEP_ENV,
    SWEEP_RUN_ENV,
    VARIANT_ENV,
    differences,
    flat_params,
    reference_params,
    run_name,
    run_tags,
    source_commit,
)
from dml.tracking.results import METRIC_GROUPS, RESULT_TAG, model_run_key, remember_model_run, report_result
from dml.tracking.runs import CURVE_METRICS, Tracker, TrainingRun, new_attempt, training_key
from dml.errors import TrackingError
from dml.tracking.store import check_reachable, tracking_uri
from dml.tracking.sync import MODEL_RUN_TAG, PARENT_TAG

__all__ = [
    "CURVE_METRICS", "METRIC_GROUPS", "MODEL_RUN_TAG", "PARENT_TAG", "RESULT_TAG", "SWEEP_BASE_ENV", "SWEEP_ENV", "SWEEP_RUN_ENV",
    "Tracker", "TrackingError", "TrainingRun", "VARIANT_ENV", "check_reachable", "differences", "flat_params", "model_run_key",
    "new_attempt", "reference_params", "remember_model_run", "report_result", "run_name", "run_tags", "source_commit",
    "tracking_uri", "training_key",
]  # fmt: skip
