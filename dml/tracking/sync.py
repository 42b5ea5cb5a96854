"""Sending outboxes to MLflow, idempotently.

Each outbox is one MLflow run, found by its tag ``dml.run_key`` (created with that tag in the
same call, so a retry never creates a second run). The run's tag ``dml.synced_seq`` is the last
record applied; a sync applies the records after it, one at a time, moving the tag after each.
A record interrupted half-way (say, metrics stored but the tag not yet moved) is the only one in
doubt: its metric points already in the run are skipped, so none is logged twice. Params, tags,
artifacts, status and links (to the run holding the model, to a sweep's parent run) are
idempotent by nature. One process syncs an outbox at a time (a lock file); another finds it
locked and leaves it.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from pathlib import Path
from typing import Any

from dml.tracking.outbox import Outbox, all_outboxes
from dml.tracking.store import experiment_id, open_client

KEY_TAG = "dml.run_key"
SYNCED_TAG = "dml.synced_seq"
MODEL_RUN_TAG = "dml.model_run_id"
MODEL_FILE_TAG = "dml.model_file"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's nesting of runs


class Locked(Exception):
    """Another process is syncing this outbox."""


def find_run(client, experiment: str, key: str):
    runs = client.search_runs([experiment], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=2)
    return runs[0] if runs else None


def _metric_points(record: dict[str, Any]) -> list:
    from mlflow.entities import Metric

    return [Metric(key, float(value), int(timestamp), int(step)) for key, value, step, timestamp in record["metrics"]]


def _already_logged(client, run_id: str, points: list) -> list:
    """The points of a record that may have been half-applied, minus those the run already has."""
    seen: set[tuple] = set()
    for key in {p.key for p in points}:
        seen |= {(key, m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)}
    return [p for p in points if (p.key, p.step, p.timestamp, p.value) not in seen]


def _apply(client, outbox: Outbox, run_id: str, record: dict[str, Any], in_doubt: bool) -> None:
    from mlflow.entities import Param, RunTag

    op = record["op"]
    if op == "run":
        params = [Param(k, v) for k, v in record["params"].items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
    elif op == "metrics":
        points = _metric_points(record)
        if in_doubt:
            points = _already_logged(client, run_id, points)
        for start in range(0, len(points), 1000):
            client.log_batch(run_id, metrics=points[start : start + 1000])
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in record["tags"].items()])
    elif op == "artifact":
        client.log_artifact(run_id, str(outbox.root / record["file"]), artifact_path=record["artifact_path"])
        if record["artifact_path"] == "model":
            client.set_tag(run_id, MODEL_FILE_TAG, f"model/{Path(record['file']).name}")
    elif op == "artifacts":
        client.log_artifacts(run_id, str(outbox.root / record["dir"]), artifact_path=record["artifact_path"])
    elif op == "register":
        _register(client, run_id, record["name"], record["artifact_path"])
    elif op == "link_model":
        # The run holding the model: synced first (outboxes go oldest first), found by its key.
        model_run = find_run(client, experiment_id(client, record["experiment"]), record["run_key"])
        if model_run is not None:
            tags = {MODEL_RUN_TAG: model_run.info.run_id}
            if MODEL_FILE_TAG in model_run.data.tags:
                tags["dml.model_uri"] = f"runs:/{model_run.info.run_id}/{model_run.data.tags[MODEL_FILE_TAG]}"
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    elif op == "link_parent":
        # Nested under a sweep's run, found by its key. Outboxes sync oldest *modified* first and
        # the sweep's keeps being written while its experiments run: sync it first if needed.
        parent = Outbox(outbox.root, record["run_key"])
        found = find_run(client, experiment_id(client, record["experiment"]), parent.key)
        parent_id = found.info.run_id if found is not None else sync_outbox(client, parent) if parent.head() is not None else None
        if parent_id is not None:
            client.set_tag(run_id, PARENT_TAG, parent_id)
    elif op == "status":
        if record["status"] == "RUNNING":
            client.update_run(run_id, status="RUNNING")
        else:
            client.set_terminated(run_id, status=record["status"], end_time=record["time"])


def _register(client, run_id: str, name: str, artifact_path: str) -> None:
    """A version of the registered model ``name`` for the run's MLflow model, unless the run has
    one already (a record applied twice after a lost answer registers once)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Embedding models of the dml pipeline: uint8 images (N, C, H, W) "
                                       "in, float32 embeddings out (mlflow.pyfunc.load_model(...).predict).")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    if not client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        client.create_model_version(name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id)


def sync_outbox(client, outbox: Outbox) -> str:
    """Apply the outbox's pending records to its MLflow run; returns the run id."""
    outbox.root.mkdir(parents=True, exist_ok=True)
    with outbox.lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(outbox.key) from None
        records = outbox.records()
        head = outbox.head()  # callers check that there is one (Outbox.pending)
        exp = experiment_id(client, head["experiment"])
        run = find_run(client, exp, outbox.key)
        if run is None:
            tags = {**head["tags"], KEY_TAG: outbox.key, SYNCED_TAG: "-1", "mlflow.runName": head["name"]}
            run = client.create_run(exp, start_time=head["time"], tags=tags)
        run_id = run.info.run_id
        synced = int(run.data.tags.get(SYNCED_TAG, "-1"))
        # The first record after the tag is the one in doubt (a damaged record kept aside is skipped).
        for position, record in enumerate(r for r in records if r["seq"] > synced):
            _apply(client, outbox, run_id, record, in_doubt=position == 0)
            client.set_tag(run_id, SYNCED_TAG, str(record["seq"]))
        outbox.mark_synced(records[-1]["seq"])
        shutil.rmtree(outbox.files, ignore_errors=True)  # artifact snapshots are in MLflow now
        return run_id


def sync_all(uri: str, root: Path, keys: list[str] | None = None) -> dict[str, str]:
    """Sync every outbox under ``root`` (or only ``keys``) with pending records; returns
    ``{key: run_id}`` of the synced ones. Raises if the store is unreachable."""
    client = open_client(uri)
    done: dict[str, str] = {}
    for outbox in all_outboxes(root):
        if (keys is not None and outbox.key not in keys) or not outbox.pending():
            continue
        try:
            done[outbox.key] = sync_outbox(client, outbox)
        except Locked:
            continue
    return done


def now_ms() -> int:
    return int(time.time() * 1000)
