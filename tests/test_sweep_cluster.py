"""A sweep on a Dask cluster (pipelines/cluster.py), on loopback: a scheduler and two workers as
separate processes, each worker with its own clone; a bare git remote, a folder DVC remote and
an MLflow server on 127.0.0.1. The stub pipeline (tests/sweep_stub) computes its metrics from
the params by known formulas, so the numbers are those of the same sweep run locally
(tests/test_sweeps.py asserts the same table)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ddp_worker import free_port
from test_sweeps import TINY_SWEEP, git, stub_project, write
from test_tracking import _start_server, _stop_server

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["tiny-dist-s0", "tiny-dist-s1", "tiny-p0.2-s0", "tiny-p0.2-s1"]


def _wait_for(address: str, workers: int, timeout: float = 90) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(workers, timeout=timeout)


@contextlib.contextmanager
def loopback_cluster(tmp_path: Path, worker_env: dict[str, str] | None = None, workers: int = 2):
    """(scheduler address, [worker workdirs], [worker processes]) of a loopback Dask cluster of
    one-thread workers declaring GPU=1 each, stopped afterwards."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    address = f"tcp://127.0.0.1:{port}"
    workdirs = [tmp_path / f"worker-{'abcdefgh'[i]}" / "repo" for i in range(workers)]
    started = []
    for workdir in workdirs:
        env = {**os.environ, "DML_WORKDIR": str(workdir), "PREFECT_HOME": str(workdir.parent / "prefect-home"),
               **{key: value.replace("{worker}", workdir.parent.name) for key, value in (worker_env or {}).items()}}
        started.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--host", "127.0.0.1",
             "--resources", "GPU=1", "--no-dashboard", "--name", workdir.parent.name],
            env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / f"{workdir.parent.name}.log").open("w"), start_new_session=True))
    procs += started
    try:
        _wait_for(address, len(started))
        yield address, workdirs, started
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path):
    with loopback_cluster(tmp_path) as (address, workdirs, _):
        yield address, workdirs


def _running(client, exp_name: str) -> bool:
    experiment = client.get_experiment_by_name("glyphs-dml")
    return experiment is not None and bool(client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`dvc.exp_name` = '{exp_name}' and attributes.status = 'RUNNING'"))


def cluster_project(tmp_path: Path) -> Path:
    """The stub project with a bare git remote (its commit pushed) and a folder DVC remote."""
    repo = stub_project(tmp_path / "repo")
    write(repo / "sweeps/tiny.yaml", TINY_SWEEP)
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "remote.git")], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-store")], cwd=repo, check=True)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "sweep and remotes")
    git(repo, "remote", "add", "origin", str(tmp_path / "remote.git"))
    git(repo, "push", "-q", "origin", "HEAD:refs/heads/main")
    return repo


def run_cluster_sweep(repo: Path, address: str, uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(repo.parent / "prefect-home"), "MLFLOW_TRACKING_URI": uri}
    env.pop("DVC_ROOT", None)
    result = subprocess.run([sys.executable, "-m", "pipelines.sweep", "--root", str(repo), "sweeps/tiny.yaml",
                             "--cluster", address, "--resources", "GPU=1", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"sweep failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


@pytest.mark.e2e
def test_a_sweep_runs_on_two_dask_workers_and_lands_in_one_place(tmp_path, cluster):
    """Both workers run experiments in their own clones; the coordinator's `dvc exp list` holds
    all four, the report's numbers are the stub's formulas (the local sweep's table), and the
    MLflow server holds the sweep's run with the four runs nested under it, each once."""
    import mlflow

    address, workdirs = cluster
    repo = cluster_project(tmp_path)
    port = free_port()
    server = _start_server(port, tmp_path / "mlflow.db", tmp_path / "mlartifacts")
    uri = f"http://127.0.0.1:{port}"
    try:
        result = run_cluster_sweep(repo, address, uri)
        lines = [line for line in result.stdout.splitlines() if ": ran in " in line]
        assert sorted(line.split(":")[0] for line in lines) == NAMES, result.stdout
        used = {Path(line.rsplit(":", 1)[-1]) for line in lines}
        assert used == set(workdirs), result.stdout  # both workers ran experiments, each in its clone
        listed = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=repo, capture_output=True, text=True)
        assert sorted(listed.stdout.split()) == NAMES
        table = pd.read_csv(repo / "reports/tiny/table.csv", index_col="variant")
        assert table.loc["dist", "recall_at_1_mean"] == pytest.approx(0.505, abs=1e-12)  # as the local sweep's
        assert table.loc["p0.2", "recall_at_1_mean"] == pytest.approx(0.525, abs=1e-12)
        assert table.loc["p0.2", "rho_train_skip1_mean"] == pytest.approx(0.6, abs=1e-12)

        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("glyphs-dml").experiment_id])
        parents = [r for r in runs if r.data.tags.get("dml.role") == "sweep"]
        children = [r for r in runs if "dvc.exp_name" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert sorted(r.data.tags["dvc.exp_name"] for r in children) == NAMES and len(runs) == 5
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}

        again = run_cluster_sweep(repo, address, uri)  # the coordinator rerun: nothing left to run
        assert again.stdout.count("skipped (done)") == 4, again.stdout
    finally:
        _stop_server(server)


def test_cluster_mode_refuses_an_uncommitted_workspace_in_one_line(tmp_path):
    repo = stub_project(tmp_path / "repo")
    write(repo / "sweeps/tiny.yaml", TINY_SWEEP)
    (repo / "stage.py").write_text((repo / "stage.py").read_text() + "\n# edited\n")
    result = subprocess.run([sys.executable, "-m", "pipelines.sweep", "--root", str(repo), "sweeps/tiny.yaml",
                             "--cluster", "tcp://127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "--cluster: the workspace has uncommitted changes to tracked files; every worker runs the sweep's commit, "
        "so commit them (or stash them) first"]


@pytest.mark.e2e
def test_a_worker_killed_mid_experiment_loses_nothing_and_duplicates_nothing(tmp_path):
    """Worker a is SIGKILLed (with its DVC and stage processes) during its first experiment:
    Dask runs that task again on worker b; the coordinator ends with the four experiments, the
    report holds each run once, and the killed attempt's MLflow run is KILLED while the same
    experiment's finished attempt is the one FINISHED run of its name."""
    import mlflow

    attempts = tmp_path / "attempts-{worker}.txt"
    with loopback_cluster(tmp_path, {"STUB_SLEEP": "6", "STUB_ATTEMPTS": str(attempts)}) as (address, workdirs, workers):
        repo = cluster_project(tmp_path)
        port = free_port()
        server = _start_server(port, tmp_path / "mlflow.db", tmp_path / "mlartifacts")
        uri = f"http://127.0.0.1:{port}"
        try:
            env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "MLFLOW_TRACKING_URI": uri}
            env.pop("DVC_ROOT", None)
            sweep = subprocess.Popen([sys.executable, "-m", "pipelines.sweep", "--root", str(repo), "sweeps/tiny.yaml",
                                      "--cluster", address, "--resources", "GPU=1"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = tmp_path / "attempts-worker-a.txt"
            deadline = time.time() + 300
            while not (first.is_file() and first.read_text().strip()) and time.time() < deadline and sweep.poll() is None:
                time.sleep(0.2)
            killed = first.read_text().split()[0]
            client = mlflow.MlflowClient(uri)
            while time.time() < deadline and not _running(client, killed):  # its training run is open
                time.sleep(0.2)
            os.killpg(workers[0].pid, signal.SIGKILL)  # the worker, its dvc exp run and the stage
            out, err = sweep.communicate(timeout=900)
            assert sweep.returncode == 0, out + err[-4000:]
            assert sorted(line.split(":")[0] for line in out.splitlines() if ": ran in " in line) == NAMES, out
            assert killed in (tmp_path / "attempts-worker-b.txt").read_text().split()  # run again on worker b
            listed = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=repo, capture_output=True, text=True)
            assert sorted(listed.stdout.split()) == NAMES
            runs_csv = pd.read_csv(repo / "reports/tiny/runs.csv")
            assert sorted(runs_csv["exp"]) == NAMES  # each once

            runs = client.search_runs([client.get_experiment_by_name("glyphs-dml").experiment_id])
            by_name: dict[str, list[str]] = {}
            for run in runs:
                if "dvc.exp_name" in run.data.tags:
                    by_name.setdefault(run.data.tags["dvc.exp_name"], []).append(run.info.status)
            assert {name: statuses.count("FINISHED") for name, statuses in by_name.items()} == dict.fromkeys(NAMES, 1)
            assert sorted(by_name[killed]) == ["FINISHED", "KILLED"], by_name
        finally:
            _stop_server(server)
