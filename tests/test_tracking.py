"""MLflow tracking through the outbox: where results go, one run per result, records that wait
through an outage and arrive later, idempotent sync (nothing lost, nothing duplicated), runs
bound to the training fingerprint, and a loopback MLflow server killed and restarted during
training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from dml.config import parse_params
from dml.errors import TrackingError
from dml.tracking import (
    MODEL_RUN_TAG,
    TrainingRun,
    check_reachable,
    report_result,
    tracking_uri,
)
from dml.tracking.outbox import Outbox, outbox_root
from dml.tracking.sync import KEY_TAG, SYNCED_TAG, sync_all


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


def test_default_store_is_sqlite_at_the_dvc_root(store, monkeypatch):
    params = parse_params({})
    assert tracking_uri(params.tracking) == f"sqlite:///{store}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri(params.tracking) == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(parse_params({"tracking": {"uri": "sqlite:////x/y.db"}}).tracking) == "sqlite:////x/y.db"


def free_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on (once closed)
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_fast_with_one_line():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as info:
        check_reachable(uri)
    assert str(info.value).startswith(f"MLflow tracking server {uri} is unreachable")
    assert "\n" not in str(info.value)


def test_missing_store_folder(tmp_path):
    with pytest.raises(TrackingError, match="is missing or not writable"):
        check_reachable(f"sqlite:///{tmp_path}/nope/mlflow.db")


FINGERPRINT = "f" * 64


def _runs(params):
    client = mlflow.MlflowClient(tracking_uri(params.tracking))
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    return client, (client.search_runs([experiment.experiment_id]) if experiment else [])


def _history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_one_run_per_result_and_model_logged_once(store):
    """Reference: the module's contract: the first result lands in the training run, a result
    after a param change gets its own run linked to the model's run, the model is stored once."""
    params = parse_params({"miner": {"name": "rho_distance", "rho_distance": {"p": 0.4}}})
    model_file = store / "model.pt"
    model_file.write_bytes(b"weights")
    plot = store / "plot.png"
    plot.write_bytes(b"png")

    training = TrainingRun(params, FINGERPRINT, "a1")
    training.log_epoch(1, {"epoch": 1, "loss": 0.5, "test_recall_at_1": 0.3})
    training.log_epoch(2, {"epoch": 2, "loss": 0.4, "test_recall_at_1": None})
    training.log_artifact(model_file, "model")
    training.finish()
    assert training.run_id is not None
    curves = {"train/loss": [(1, 0.5), (2, 0.4)]}

    first = report_result(params, training.key, {"recall_at_1": 0.8}, curves, [plot], model_file)
    assert first["run_id"] == training.run_id and not first["new_run"]

    second_params = parse_params({"miner": {"name": "rho_distance", "rho_distance": {"p": 0.4}}, "eval": {"recall_at": [1, 16]}})
    second = report_result(second_params, training.key, {"recall_at_1": 0.8}, curves, [plot], model_file)
    assert second["new_run"] and second["run_id"] != training.run_id

    client, runs = _runs(params)
    assert len(runs) == 2
    new = client.get_run(second["run_id"])
    assert new.data.params["miner.rho_distance.p"] == "0.4" and new.data.params["eval.recall_at"] == "1,16"
    assert new.data.tags[MODEL_RUN_TAG] == training.run_id
    assert new.data.tags["dml.model_uri"] == f"runs:/{training.run_id}/model/model.pt"
    assert _history(client, new.info.run_id, "train/loss") == [(1, 0.5), (2, 0.4)]
    assert _history(client, training.run_id, "train/test_recall_at_1") == [(1, 0.3)]
    assert [a.path for a in client.list_artifacts(new.info.run_id)] == ["plots"]  # no second copy of the model
    assert [a.path for a in client.list_artifacts(training.run_id, "model")] == ["model/model.pt"]
    assert client.get_run(training.run_id).data.metrics["recall_at_1"] == 0.8
    assert client.get_run(training.run_id).info.status == "FINISHED"
    assert client.get_experiment(runs[0].info.experiment_id).artifact_location == (store / "mlartifacts").as_uri()


def test_outage_records_wait_and_arrive_later_without_duplicates(store, monkeypatch, capsys):
    """Reference: the outbox contract: with the server unreachable training records go on (one
    warning line, whatever the number of failed syncs); pointed at a store again, a sync sends
    every record exactly once, and a second sync sends nothing."""
    params = parse_params({})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    run = TrainingRun(params, FINGERPRINT, "down")
    for epoch in (1, 2, 3):
        run.log_epoch(epoch, {"loss": 1.0 / epoch, "seconds": 2.0})
        assert run.sync() is False
    run.finish()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: MLflow store")]
    assert len(warnings) == 1 and run.run_id is None
    assert Outbox(outbox_root(), run.key).pending()

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = tracking_uri(params.tracking)
    assert run.key in sync_all(uri, outbox_root())
    assert sync_all(uri, outbox_root()) == {}  # nothing pending any more
    client, runs = _runs(params)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert _history(client, runs[0].info.run_id, "train/loss") == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    assert _history(client, runs[0].info.run_id, "train/epoch_seconds") == [(1, 2.0), (2, 2.0), (3, 2.0)]


def test_half_applied_record_is_not_logged_twice(store):
    """Reference: the sync protocol: a crash after a metrics record reached MLflow but before its
    ``dml.synced_seq`` tag moved leaves that record in doubt; the next sync skips its points that
    the run has, so every point is there exactly once."""
    params = parse_params({})
    run = TrainingRun(params, FINGERPRINT, "crash")
    run.log_epoch(1, {"loss": 0.9})
    run.log_epoch(2, {"loss": 0.8})
    assert run.sync()
    client, _ = _runs(params)
    # roll the marker back by one record, as if the process died right after sending epoch 2
    client.set_tag(run.run_id, SYNCED_TAG, str(len(run.outbox.records()) - 2))
    run.outbox.marker.unlink()
    run.log_epoch(3, {"loss": 0.7})
    assert run.sync()
    assert _history(client, run.run_id, "train/loss") == [(1, 0.9), (2, 0.8), (3, 0.7)]
    assert client.get_run(run.run_id).data.tags[KEY_TAG] == run.key


def test_torn_last_line_is_dropped(store):
    """Reference: append-only log semantics: a record cut by a kill mid-write was never complete,
    so it is not read and the next record starts on a clean line."""
    box = Outbox(store / "box", "k")
    box.append("tags", tags={"a": "1"})
    with box.path.open("a") as handle:
        handle.write('{"seq": 1, "op": "tags", "ta')
    fresh = Outbox(store / "box", "k")
    assert [r["seq"] for r in fresh.records()] == [0]
    fresh.append("tags", tags={"b": "2"})
    assert [json.loads(line)["seq"] for line in box.path.read_text().splitlines()] == [0, 1]


def test_resumed_training_continues_its_run_and_fills_the_curve(store):
    """Reference: the resume contract: same fingerprint and attempt -> the same MLflow run, epochs
    restored from the checkpoint but missing from the records (killed between checkpoint and
    record) are added, none twice; another training in between would have been a new run."""
    params = parse_params({})
    run = TrainingRun(params, FINGERPRINT, "resume")
    run.log_epoch(1, {"loss": 0.9})
    run.sync()
    # killed after epoch 2's checkpoint, before its record; resumed:
    restored = [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.8}]
    again = TrainingRun(params, FINGERPRINT, "resume", restored_curve=restored)
    again.log_epoch(3, {"loss": 0.7})
    again.finish()
    assert again.run_id == run.run_id
    client, runs = _runs(params)
    assert len(runs) == 1
    assert _history(client, run.run_id, "train/loss") == [(1, 0.9), (2, 0.8), (3, 0.7)]


def test_abandoned_training_is_marked_killed_and_a_new_config_gets_a_new_run(store):
    """Reference: a training that died without a word (no terminal status) and is not the one
    being resumed is KILLED; a different fingerprint is a different run, so the new config's
    records never land in the old run."""
    params = parse_params({})
    old = TrainingRun(params, FINGERPRINT, "old")
    old.log_epoch(1, {"loss": 0.9})
    old.sync()
    old.outbox.release()  # its process died: the OS drops the writer lock
    changed = parse_params({"optim": {"lr": 0.0025}})
    new = TrainingRun(changed, "e" * 64, "new")
    new.log_epoch(1, {"loss": 0.5})
    new.finish()
    client, runs = _runs(params)
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[old.run_id].info.status == "KILLED" and by_id[old.run_id].data.params["optim.lr"] == "0.001"
    assert by_id[new.run_id].info.status == "FINISHED" and by_id[new.run_id].data.params["optim.lr"] == "0.0025"
    assert _history(client, old.run_id, "train/loss") == [(1, 0.9)]
    assert _history(client, new.run_id, "train/loss") == [(1, 0.5)]


def test_a_concurrent_live_training_is_not_marked_killed_and_loses_no_record(store, capsys):
    """Reference: the two runs' own records. Two trainings alive at once (a sweep's concurrent
    experiments; the second process's writer lock is a second open file here) each finish with
    their own status and every epoch; nothing is marked KILLED or kept aside as damaged (the
    second used to append KILLED into the first's live outbox, whose next record then clashed)."""
    params = parse_params({})
    first = TrainingRun(params, FINGERPRINT, "first")
    first.log_epoch(1, {"loss": 0.9})
    second = TrainingRun(parse_params({"optim": {"lr": 0.0025}}), "e" * 64, "second")
    first.log_epoch(2, {"loss": 0.8})
    second.log_epoch(1, {"loss": 0.5})
    first.finish()
    second.finish()
    client, runs = _runs(params)
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[first.run_id].info.status == by_id[second.run_id].info.status == "FINISHED"
    assert _history(client, first.run_id, "train/loss") == [(1, 0.9), (2, 0.8)]
    assert _history(client, second.run_id, "train/loss") == [(1, 0.5)]
    assert [r["status"] for r in first.outbox.records() if r["op"] == "status"] == ["FINISHED"]
    assert "damaged" not in capsys.readouterr().err


def _start_server(port: int, backend: Path, artifacts: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{backend}", "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def _stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 9)  # the server and its workers, as a crash would
    proc.wait()


@pytest.mark.integration
def test_loopback_server_killed_and_restarted_during_training(store, monkeypatch, capsys):
    """Reference: a real MLflow server on loopback, killed after epoch 1 and restarted after
    epoch 3 of a 5-epoch training: every curve point arrives exactly once, the run is FINISHED,
    and the outage cost one warning line."""
    import numpy as np

    from dml.data.loading import ArraySplit
    from dml.data.stats import Stats
    from dml.training.metric import train

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 8)
    split = ArraySplit(rng.integers(0, 256, (64, 1, 16, 16), dtype=np.uint8), labels, np.arange(64))
    stats = Stats([127.5], [60.0], 1, "synthetic")
    params = parse_params({"model": {"embed_dim": 8}, "train": {"epochs": 5, "batch_size": 32, "num_threads": 1},
                           "transforms": {"size": 16, "resize": 16}})
    port = free_port()
    backend, artifacts = store / "server.db", store / "server-artifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    server = _start_server(port, backend, artifacts)
    try:
        run = TrainingRun(params, FINGERPRINT, "live")

        def on_epoch(record):
            nonlocal server
            run.log_epoch(record.epoch, {"loss": record.loss, "seconds": record.seconds})
            run.sync()
            if record.epoch == 1:
                _stop_server(server)
            if record.epoch == 3:
                server = _start_server(port, backend, artifacts)

        train(params, split, stats, on_epoch=on_epoch, progress=False)
        run.finish()
        client = mlflow.MlflowClient(f"http://127.0.0.1:{port}")
        runs = client.search_runs([client.get_experiment_by_name(params.tracking.experiment).experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        steps = [step for step, _ in _history(client, runs[0].info.run_id, "train/loss")]
        assert steps == [1, 2, 3, 4, 5]
        assert len(_history(client, runs[0].info.run_id, "train/epoch_seconds")) == 5
    finally:
        _stop_server(server)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: MLflow store")]
    assert len(warnings) == 1


NAMING_ENV = ("DML_SWEEP", "DML_VARIANT", "DML_SWEEP_BASE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()


def _commit_params(repo: Path, raw: dict | str) -> str:
    """Commit ``raw`` as ``repo``'s params.yaml; returns the commit."""
    if not (repo / ".git").is_dir():
        _git(repo, "init", "-q")
    (repo / "params.yaml").write_text(raw if isinstance(raw, str) else json.dumps(raw))  # JSON is YAML
    _git(repo, "add", "params.yaml")
    _git(repo, "commit", "-qm", "params")
    return _git(repo, "rev-parse", "HEAD")


def _merged(base: dict, changes: dict) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


# A committed params.yaml that differs from the schema's defaults (train.epochs 6, triplet margin 0.2,
# eval.kmeans_iters 100 there), as the project's own params.yaml does.
COMMITTED = {"train": {"epochs": 15}, "loss": {"triplet": {"margin": 0.3}}, "eval": {"kmeans_iters": 5}}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("changes", "name", "variant"),
    [
        ({}, "margin + distance seed=0", "defaults"),  # the method; the schema's defaults would name epochs=15 kmeans_iters=5
        ({"train": {"epochs": 6}}, "epochs=6 seed=0", "epochs=6"),  # the schema's default, not the project's
        ({"loss": {"name": "triplet"}, "train": {"seed": 1}}, "loss=triplet seed=1", "loss=triplet"),  # margin 0.3 as committed
        ({"loss": {"name": "arcface"}}, "loss=arcface seed=0", "loss=arcface"),  # miner auto -> none: no difference
        ({"miner": {"name": "rho_distance", "rho_distance": {"p": 0.2}}, "train": {"seed": 2}},
         "miner=rho_distance p=0.2 seed=2", "miner=rho_distance p=0.2"),
        ({"miner": {"rho_distance": {"p": 0.2}}}, "margin + distance seed=0", "defaults"),  # an unselected knob
        ({"train": {"epochs": 1, "batch_size": 32, "num_threads": 1}, "embed": {"batch_size": 64}, "eval": {"kmeans_iters": 7},
          "optim": {"lr": 0.002}}, "lr=0.002 epochs=1 train.batch_size=32 embed.batch_size=64 +1 seed=0",
         "lr=0.002 epochs=1 train.batch_size=32 embed.batch_size=64 kmeans_iters=7"),
    ],
)
def test_run_name_and_variant_say_what_differs_from_the_committed_params(tmp_path, monkeypatch, changes, name, variant):
    """Reference: COMMITTED (the repository's params.yaml at HEAD) diffed by hand against the
    run's params (COMMITTED plus ``changes``, as `dvc exp run -S` writes them): training choices
    first, at most four keys then a count, the seed always; values `auto` resolves to and knobs of
    unselected methods are no difference; train.num_threads changes no number and is left out."""
    from dml.tracking import run_name, run_tags

    for env in NAMING_ENV:
        monkeypatch.delenv(env, raising=False)
    _commit_params(tmp_path, COMMITTED)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    params = parse_params(_merged(COMMITTED, changes))
    assert run_name(params) == name
    tags = run_tags(params)
    assert tags["dml.variant"] == variant and "dml.sweep" not in tags
    monkeypatch.setenv("DML_SWEEP", "study")
    monkeypatch.setenv("DML_VARIANT", "v1")
    monkeypatch.setenv("DVC_STAGE", "train")
    tags = run_tags(params)
    assert (tags["dml.variant"], tags["dml.sweep"], tags["mlflow.source.name"]) == ("v1", "study", "dvc.yaml:train")


@pytest.mark.integration
def test_a_sweep_runs_name_says_its_variant_not_the_sweeps_common_overrides(tmp_path, monkeypatch):
    """Reference: COMMITTED plus the sweep's base (DML_SWEEP_BASE, as pipelines/sweep.py sets it):
    the condition every run of the sweep shares is in the sweep's own run, not in each name."""
    from dml.tracking import run_name, run_tags

    for env in NAMING_ENV:
        monkeypatch.delenv(env, raising=False)
    _commit_params(tmp_path, COMMITTED)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    base = {"optim.lr": 0.0001, "data.glyphs.split_by": "script", "train.track_test_recall": False}
    run = {"optim": {"lr": 0.0001}, "data": {"glyphs": {"split_by": "script"}}, "train": {"track_test_recall": False, "seed": 1},
           "miner": {"name": "rho_distance", "rho_distance": {"p": 0.2}}}
    params = parse_params(_merged(COMMITTED, run))
    assert run_name(params) == "miner=rho_distance p=0.2 lr=0.0001 track_test_recall=false +1 seed=1"  # outside the sweep
    monkeypatch.setenv("DML_SWEEP_BASE", json.dumps(base))
    assert run_name(params) == "miner=rho_distance p=0.2 seed=1"
    monkeypatch.setenv("DML_VARIANT", "p0.2")
    assert run_tags(params)["dml.variant"] == "p0.2"


@pytest.mark.integration
def test_run_name_is_relative_to_the_experiments_baseline_commit(tmp_path, monkeypatch):
    """Reference: the params.yaml of the commit in DVC_EXP_BASELINE_REV (what a DVC experiment was
    run from, also when HEAD has moved on), else of HEAD."""
    from dml.tracking import run_name, run_tags

    for env in NAMING_ENV:
        monkeypatch.delenv(env, raising=False)
    first = _commit_params(tmp_path, {"train": {"epochs": 15}})
    second = _commit_params(tmp_path, {"train": {"epochs": 20}})
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    params = parse_params({"train": {"epochs": 20, "seed": 3}})
    assert run_name(params) == "margin + distance seed=3"  # HEAD = second
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", first)
    assert run_name(params) == "epochs=20 seed=3"
    assert run_tags(params)["mlflow.source.git.commit"] == first
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", second)
    assert run_name(params) == "margin + distance seed=3"


@pytest.mark.integration
@pytest.mark.parametrize("repository", ["none", "no params.yaml", "invalid params.yaml"])
def test_run_name_falls_back_to_the_schema_defaults(tmp_path, monkeypatch, repository):
    """Reference: the schema's defaults (parse_params({}): train.epochs 6, eval.kmeans_iters 100)
    where no committed params.yaml can be read: no git repository, the file not committed, or a
    committed file the current schema rejects."""
    from dml.tracking import run_name, run_tags

    for env in NAMING_ENV:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository found above tmp_path
    if repository == "no params.yaml":
        _git(tmp_path, "init", "-q")
        _git(tmp_path, "commit", "-q", "--allow-empty", "-m", "empty")
    elif repository == "invalid params.yaml":
        _commit_params(tmp_path, {"train": {"epochs": 15, "no_such_key": 1}})
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    params = parse_params({"train": {"epochs": 15, "seed": 1}, "eval": {"kmeans_iters": 5}})
    assert run_name(params) == "epochs=15 kmeans_iters=5 seed=1"
    assert run_tags(params)["dml.variant"] == "epochs=15 kmeans_iters=5"
    assert run_name(parse_params({})) == "margin + distance seed=0"


@pytest.mark.integration
def test_default_run_of_this_project_is_named_by_its_method_and_seed(tmp_path, monkeypatch):
    """Reference: this repository's params.yaml as committed at HEAD: run as committed, the name
    is the seed alone; one `-S loss.name=arcface` names just that."""
    from dml.config import read_yaml
    from dml.tracking import run_name, run_tags

    root = Path(__file__).resolve().parents[1]
    committed = subprocess.run(["git", "show", "HEAD:./params.yaml"], cwd=root, capture_output=True, text=True)
    if committed.returncode != 0:
        pytest.skip("not a git checkout with params.yaml committed")
    for env in NAMING_ENV:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("DVC_ROOT", str(root))
    path = tmp_path / "params.yaml"
    path.write_text(committed.stdout)
    raw = read_yaml(path)
    params = parse_params(raw)
    assert (run_name(params), run_tags(params)["dml.variant"]) == (f"margin + distance seed={params.train.seed}", "defaults")
    raw["loss"]["name"] = "arcface"
    assert run_name(parse_params(raw)) == f"loss=arcface seed={params.train.seed}"


def test_runs_of_a_sweep_nest_under_its_run_even_when_synced_first(store, monkeypatch):
    """Reference: MLflow's nesting tag ``mlflow.parentRunId``. A run opened with the sweep's run
    key in DML_SWEEP_RUN_KEY links to the sweep's run; synced before it (the sweep's outbox keeps
    changing while its experiments run), the sweep's run is synced first, and only once."""
    from dml.tracking import SWEEP_RUN_ENV, Tracker

    params = parse_params({})
    parent = Tracker(params, "sweep-s-0123", head={"name": "sweep s", "tags": {"dml.role": "sweep"}, "params": {"sweep.file": "s.yaml"}})
    monkeypatch.setenv(SWEEP_RUN_ENV, parent.key)
    child = TrainingRun(params, FINGERPRINT, "child")  # syncs: the parent's outbox goes first
    child.finish()
    client, runs = _runs(params)
    assert len(runs) == 2
    sweep_run = next(r for r in runs if r.data.tags.get("dml.role") == "sweep")
    assert sweep_run.info.run_name == "sweep s" and sweep_run.data.params == {"sweep.file": "s.yaml"}
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == sweep_run.info.run_id
    assert client.get_run(child.run_id).data.tags["mlflow.runName"] == "margin + distance seed=0"


def _report_inputs(workspace: Path, model: bytes = b"x") -> None:
    """The report stage's input files in ``workspace``."""
    files = {"metrics/eval.json": {"recall_at_1": 0.8, "nmi": 0.7}, "metrics/spectrum.json": {"rho": 0.6, "pi_ratio": 0.5},
             "metrics/train.json": {"final_loss": 0.2, "epochs": 2}, "index/meta.json": {"build_seconds": 0.1, "factory": "Flat"}}
    for name, payload in files.items():
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text(json.dumps(payload))
    (workspace / "metrics/train_curve.csv").write_text("epoch,loss,test_recall_at_1,train_rho_skip1\n1,0.5,0.6,\n2,0.2,0.8,0.4\n")
    for name, content in (("plots/spectrum.png", b"x"), ("plots/gallery.png", b"x"), ("models/model.pt", model)):
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_bytes(content)


def test_report_groups_metrics_by_prefix(store, monkeypatch):
    """The report stage's record: eval/ (metrics/eval.json), space/ (metrics/spectrum.json),
    train/ (metrics/train.json and the per-epoch curves), index/ (index/meta.json), values as in
    the files."""
    from stages.report import report

    monkeypatch.chdir(store)
    _report_inputs(store)
    params = parse_params({"tracking": {"log_model": False}})
    report(params)
    client, runs = _runs(params)
    assert len(runs) == 1
    assert runs[0].data.metrics == {"eval/recall_at_1": 0.8, "eval/nmi": 0.7, "space/rho": 0.6, "space/pi_ratio": 0.5,
                                    "train/final_loss": 0.2, "index/build_seconds": 0.1,
                                    "train/loss": 0.2, "train/test_recall_at_1": 0.8, "train/rho_skip1": 0.4}
    assert _history(client, runs[0].info.run_id, "train/loss") == [(1, 0.5), (2, 0.2)]
    # a number that describes the setup is a tag, not a one-value metric; the run and its
    # experiment describe themselves (MLflow's description tag)
    tags = runs[0].data.tags
    assert tags["train/epochs"] == "2"
    assert tags["mlflow.note.content"] == (
        "**glyphs** data · model small_cnn (128-d) · loss margin · miner distance · sampler class_balanced · "
        "6 epochs · seed 0\n\nR@1 0.800 · NMI 0.700 · rho 0.600 · pi_ratio 0.500\n\n"
        "Differs from params.yaml: nothing (the project's own params.yaml)")
    experiment = client.get_experiment(runs[0].info.experiment_id)
    assert experiment.tags["mlflow.note.content"].startswith("Results of the dml-pipeline")


def test_report_finds_the_training_run_by_the_model_file_from_another_workspace(store, monkeypatch):
    """Reference: the module's contract (the first result of a model lands in the run that trained
    it), across workspaces as in `dvc exp run --temp`: training in the repository (DVC_ROOT =
    store), the report in another folder holding a copy of the model file. No DVC output names
    the run: the reference is .dml/model_runs/<sha256 of the model>.json under the repository root,
    the result's run .dml/report.json in the report's workspace. Another model file finds no
    training run and gets a new run of its own."""
    import hashlib

    from dml.tracking import model_run_key, remember_model_run
    from stages.report import report

    params = parse_params({"tracking": {"log_model": False}})
    (store / "models").mkdir()
    (store / "models/model.pt").write_bytes(b"trained weights")
    training = TrainingRun(params, FINGERPRINT, "t1")
    training.finish()
    remember_model_run(store / "models/model.pt", training)
    digest = hashlib.sha256(b"trained weights").hexdigest()
    assert json.loads((store / ".dml/model_runs" / f"{digest}.json").read_text())["run_key"] == training.key

    workspace = store / "tmp-exp"
    _report_inputs(workspace, model=b"trained weights")
    monkeypatch.chdir(workspace)
    assert model_run_key(Path("models/model.pt")) == training.key
    report(params)
    result = json.loads((workspace / ".dml/report.json").read_text())
    assert (result["run_key"], result["run_id"], result["new_run"]) == (training.key, training.run_id, False)
    assert sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*") if p.is_file() and ".dml" not in p.parts) == [
        "index/meta.json", "metrics/eval.json", "metrics/spectrum.json", "metrics/train.json", "metrics/train_curve.csv",
        "models/model.pt", "plots/gallery.png", "plots/spectrum.png", "plots/train_curve.png", "plots/train_spectrum.png"]
    from PIL import Image

    for name in ("plots/train_curve.png", "plots/train_spectrum.png"):  # no matplotlib version stamp in a DVC output
        assert Image.open(workspace / name).text == {}

    (workspace / "models/model.pt").write_bytes(b"other weights")
    assert model_run_key(Path("models/model.pt")) is None
    report(params)
    other = json.loads((workspace / ".dml/report.json").read_text())
    assert other["new_run"] and other["run_id"] not in (None, training.run_id)
    client, runs = _runs(params)
    assert len(runs) == 2 and MODEL_RUN_TAG not in client.get_run(other["run_id"]).data.tags
