"""MLflow tracking: where results go, one run per result, and a clear error for an unreachable
tracking server."""

from __future__ import annotations

import socket

import mlflow
import pytest

from dml.config import parse_params
from dml.tracking import (
    MODEL_RUN_TAG,
    TrackingError,
    TrainingRun,
    check_reachable,
    report_result,
    tracking_uri,
)


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


def test_unreachable_server_fails_fast_with_one_line():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(TrackingError) as info:
        check_reachable(uri)
    assert str(info.value).startswith(f"MLflow tracking server {uri} is unreachable")
    assert "\n" not in str(info.value)


def test_missing_store_folder(tmp_path):
    with pytest.raises(TrackingError, match="is missing or not writable"):
        check_reachable(f"sqlite:///{tmp_path}/nope/mlflow.db")


def test_one_run_per_result_and_model_logged_once(store):
    params = parse_params({"miner": {"name": "rho_distance", "rho_distance": {"p": 0.4}}})
    model_file = store / "model.pt"
    model_file.write_bytes(b"weights")
    plot = store / "plot.png"
    plot.write_bytes(b"png")

    training = TrainingRun(params)
    training.log_epoch(1, {"epoch": 1, "loss": 0.5, "test_recall_at_1": 0.3})
    training.log_epoch(2, {"epoch": 2, "loss": 0.4, "test_recall_at_1": None})
    training.log_model(model_file)
    training.finish()
    curves = {"train_loss": [(1, 0.5), (2, 0.4)]}

    first = report_result(params, training.run_id, {"recall_at_1": 0.8}, curves, [plot], model_file)
    assert first["run_id"] == training.run_id and not first["new_run"]

    second_params = parse_params({"miner": {"name": "rho_distance", "rho_distance": {"p": 0.4}}, "eval": {"recall_at": [1, 16]}})
    second = report_result(second_params, training.run_id, {"recall_at_1": 0.8}, curves, [plot], model_file)
    assert second["new_run"] and second["run_id"] != training.run_id

    client = mlflow.MlflowClient(tracking_uri(params.tracking))
    runs = client.search_runs([training.experiment_id])
    assert len(runs) == 2
    new = client.get_run(second["run_id"])
    assert new.data.params["miner.rho_distance.p"] == "0.4" and new.data.params["eval.recall_at"] == "1,16"
    assert new.data.tags[MODEL_RUN_TAG] == training.run_id
    assert [(m.step, m.value) for m in client.get_metric_history(new.info.run_id, "train_loss")] == [(1, 0.5), (2, 0.4)]
    live = client.get_metric_history(training.run_id, "test_recall_at_1")
    assert [(m.step, m.value) for m in live] == [(1, 0.3)]
    assert [a.path for a in client.list_artifacts(new.info.run_id)] == ["plots"]  # no second copy of the model
    assert [a.path for a in client.list_artifacts(training.run_id, "model")] == ["model/model.pt"]
    assert client.get_run(training.run_id).data.metrics["recall_at_1"] == 0.8
    assert client.get_experiment(training.experiment_id).artifact_location == (store / "mlartifacts").as_uri()
