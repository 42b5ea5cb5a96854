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

import functools
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from dml.config import PARAMS_FILE, ConfigError, Params, apply_overrides, parse_params, repo_root
from dml.config import _flatten as flatten
from dml.io import file_sha256, read_json, write_json
from dml.paths import MODEL_RUNS
from dml.tracking.outbox import TERMINAL, Outbox, all_outboxes, outbox_root
from dml.tracking.store import TrackingError, check_reachable, tracking_uri
from dml.tracking.sync import MODEL_RUN_TAG, PARENT_TAG, now_ms, sync_all

# Metric names are grouped by prefix so that related numbers sort (and chart) together in MLflow:
# eval/ (retrieval and clustering), train/ (curves and training's own numbers), space/ (the
# embedding space: rho, pi), index/ (the index's build and search figures).
METRIC_GROUPS = ("eval", "train", "space", "index")
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
# Set by a sweep (pipelines/sweep.py) for the stages of its experiments: the sweep's name, the
# variant's name (the tag that groups a variant's seeds) and the outbox key of the sweep's parent run.
SWEEP_ENV, VARIANT_ENV, SWEEP_RUN_ENV = "DML_SWEEP", "DML_VARIANT", "DML_SWEEP_RUN_KEY"
# A sweep's base overrides (JSON, dotted keys): its runs are named by what differs from them, the
# variant, since the sweep's own run and tag already say what all of them share.
SWEEP_BASE_ENV = "DML_SWEEP_BASE"
RESULT_TAG = "dml.result_logged"
TRAINING_PREFIX = "train-"
METRICS_PER_RECORD = 900  # below MLflow's 1000 per log_batch


def source_commit() -> str:
    """The commit the result comes from: in a DVC experiment the baseline commit it was run from
    (``DVC_EXP_BASELINE_REV``; the experiment's own commit is made only after its stages have
    run), else the repository's HEAD. Uncommitted changes are not in either."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_tags(params: Params) -> dict[str, str]:
    """MLflow's standard source tags, the variant (a sweep's name for it, else what differs from
    the committed params.yaml, seed aside: the tag that groups a variant's seeds; see
    :func:`differences`) and the sweep and DVC experiment the run belongs to."""
    stage = os.environ.get("DVC_STAGE")
    tags = {
        "mlflow.source.git.commit": source_commit(),
        "mlflow.source.name": f"dvc.yaml:{stage}" if stage else Path(sys.argv[0]).name,
        "mlflow.source.type": "LOCAL",
        "dml.variant": os.environ.get(VARIANT_ENV) or " ".join(f"{k}={v}" for k, v in differences(params)) or "defaults",
    }
    for tag, env in (("dml.sweep", SWEEP_ENV), ("dvc.exp_name", "DVC_EXP_NAME")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


NAME_KEYS = 4  # differences shown in a run name (the seed comes on top)
NAME_SECTIONS = ("loss", "miner", "sampler", "model", "optim", "train", "transforms", "data", "preprocess",
                 "embed", "index", "eval", "spectrum", "gallery")  # the order differences are named in
NOT_NAMED = ("train.seed", "train.num_threads", "train.device")  # the seed is named apart; the rest changes no number


def _short(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def differences(params: Params, reference: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """``[(short key, value)]`` of the run's params (:meth:`Params.flat`) that differ from
    ``reference`` (default :func:`reference_params`: the project's params.yaml as committed),
    training choices first. A value that ``auto`` resolves to (the loss's default miner and
    normalisation) is no difference. Short keys: ``loss`` for ``loss.name``, else the last part
    (``p``, ``batch_size``); where two would clash, the key without its section
    (``triplet.margin``) or, for a section's own knob, the whole key (``embed.batch_size``)."""
    reference = reference_params() if reference is None else reference
    knobs = params.loss.knobs
    auto = {"miner.name": knobs.default_miner, "model.normalize": knobs.normalized_embeddings}
    rank = {section: i for i, section in enumerate(NAME_SECTIONS)}
    found = [(key, value) for key, value in params.flat().items()
             if key.split(".")[0] in rank and key not in NOT_NAMED and key in reference
             and value != reference[key] and not (key in auto and value == auto[key])]
    found.sort(key=lambda item: rank[item[0].split(".")[0]])
    shorts = [key.rsplit(".", 2)[-2] if key.endswith(".name") else key.rsplit(".", 1)[-1] for key, _ in found]
    return [(short if shorts.count(short) == 1 else key.split(".", 1)[1] if key.count(".") > 1 else key, _short(value))
            for short, (key, value) in zip(shorts, found)]


def _all_keys(params: Params) -> dict[str, Any]:
    """Every key of ``params`` (all methods' knobs, not only the selected ones'), in the form
    :meth:`Params.flat` gives them."""
    return flatten(params.model_dump(mode="json"))


@functools.cache
def _defaults() -> dict[str, Any]:
    """The schema's defaults (``parse_params({})``), every key."""
    return _all_keys(parse_params({}))


def reference_params() -> dict[str, Any]:
    """What a run name is relative to: the project's own defaults, its ``params.yaml`` as committed
    at the commit the run comes from (:func:`source_commit`: a DVC experiment's baseline, else
    HEAD) in the repository at :func:`repo_root` (also for ``--temp`` workspaces), every key.
    Falls back to the schema's defaults where there is no such file (no git repository, the file
    not committed, or no longer valid under the current schema). Inside a sweep, that file plus the
    sweep's base overrides (``DML_SWEEP_BASE``): its runs are named by their variant and seed."""
    return _committed_params(str(repo_root()), source_commit(), os.environ.get(SWEEP_BASE_ENV, "")) or _defaults()


@functools.cache
def _committed_params(root: str, commit: str, base_json: str = "") -> dict[str, Any] | None:
    import json

    from ruamel.yaml import YAML, YAMLError

    try:  # ``<rev>:./<path>``: the path relative to ``root``, also when it is a subfolder of the git repository
        out = subprocess.run(["git", "show", f"{commit}:./{PARAMS_FILE}"], cwd=root, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        raw = YAML(typ="safe", pure=True).load(out.stdout.decode())
        if base_json:
            raw = apply_overrides(raw, json.loads(base_json))
        return _all_keys(parse_params(raw, f"{commit[:12]}:{PARAMS_FILE}"))
    except (ConfigError, YAMLError, UnicodeDecodeError, ValueError, AttributeError):
        return None


def run_name(params: Params) -> str:
    """What differs from the committed params.yaml (:func:`differences`), a few keys, and the
    seed: ``loss=arcface seed=1``."""
    diffs = differences(params)
    parts = [f"{key}={value}" for key, value in diffs[:NAME_KEYS]]
    if len(diffs) > NAME_KEYS:
        parts.append(f"+{len(diffs) - NAME_KEYS}")
    return " ".join([*parts, f"seed={params.train.seed}"])


def flat_params(params: Params) -> dict[str, str]:
    return {key: str(value) for key, value in params.flat().items()}


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
    """The MLflow run of one training attempt (see the module docstring)."""

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


def _mark_abandoned_trainings(root: Path, keep: str) -> None:
    """Training runs whose process died without a word (SIGKILL, power loss) and that no
    checkpoint will resume are marked KILLED instead of staying RUNNING forever."""
    for outbox in all_outboxes(root):
        if outbox.key.startswith(TRAINING_PREFIX) and outbox.key != keep and outbox.status() not in TERMINAL:
            outbox.append("status", status="KILLED", time=now_ms())


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
) -> dict[str, Any]:
    """Record one pipeline result; see the module docstring for which run it lands in."""
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
    tracker.log_metrics(metrics)
    for path in artifacts:
        tracker.log_artifact(path, "plots")
    tracker.set_tags({RESULT_TAG: "true"})
    tracker.set_status("FINISHED")
    tracker.sync()
    return {**tracker.reference(), "new_run": not reuse}


__all__ = [
    "CURVE_METRICS", "METRIC_GROUPS", "MODEL_RUN_TAG", "PARENT_TAG", "RESULT_TAG", "SWEEP_BASE_ENV", "SWEEP_ENV", "SWEEP_RUN_ENV",
    "Tracker", "TrackingError", "TrainingRun", "VARIANT_ENV", "check_reachable", "differences", "model_run_key",
    "new_attempt", "reference_params", "remember_model_run", "report_result", "run_name", "run_tags", "tracking_uri",
    "training_key",
]  # fmt: skip
