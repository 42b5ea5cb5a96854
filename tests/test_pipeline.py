"""End to end: `dvc repro` of a tiny config in a temporary git copy of the project.

Checks the selective reruns promised by dvc.yaml, that a malformed params.yaml changes no
output, that a no-op repro adds no MLflow run, and that the Prefect flow runs the same DAG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ALL_STAGES = ["prepare", "preprocess", "configure", "pretrain", "train", "embed", "index", "evaluate", "spectrum", "gallery", "report"]

TINY = {
    "data": {"glyphs": {"max_classes": 16, "samples_per_class": 8}},
    "train": {"epochs": 1, "batch_size": 32, "num_threads": 1},
    "embed": {"batch_size": 64},
    "eval": {"kmeans_iters": 5},
}

pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def _merge(target: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def set_params(repo: Path, **changes: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    _merge(params, changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def mlflow_client(repo: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def mlflow_runs(repo: Path) -> list:
    client = mlflow_client(repo)
    experiment = client.get_experiment_by_name("glyphs-dml")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def snapshot(repo: Path) -> dict[str, bytes]:
    files = ["metrics/eval.json", "metrics/spectrum.json", "models/model.pt", "embeddings/test.parquet", "index/test.faiss"]
    return {name: (repo / name).read_bytes() for name in files}


def tiny_project(repo: Path) -> Path:
    """A git repository at ``repo`` holding the project's tracked files and a tiny params.yaml."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    set_params(repo, **TINY)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline"], repo)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return tiny_project(tmp_path_factory.mktemp("pipeline"))


def check_registered_model(repo: Path) -> None:
    """The result's registered MLflow model, loaded offline with mlflow.pyfunc, embeds the test
    images (read from the packed shards) as the embed stage did (embeddings/test.parquet)."""
    import mlflow

    from dml.data.loading import load_split
    from dml.embeddings import read_embeddings

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    versions = mlflow_client(repo).search_model_versions("name='glyphs-dml-embedding'")
    assert [int(v.version) for v in versions] == [1] and versions[0].run_id == mlflow_runs(repo)[0].info.run_id
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/glyphs-dml-embedding/1")
    finally:
        mlflow.set_tracking_uri(None)
    test = load_split(repo / "data/preprocessed", "test")
    images = np.stack([test.read(i).numpy() for i in range(len(test))])
    expected = read_embeddings(repo / "embeddings/test.parquet")
    assert np.array_equal(expected.ids, test.ids)
    np.testing.assert_allclose(model.predict(images), expected.vectors, rtol=1e-4, atol=1e-5)


def test_full_then_selective_reruns(repo):
    first = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert ran_stages(first.stdout) == set(ALL_STAGES)
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert {"recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "nmi", "map_at_r"} <= set(metrics)
    spectrum = json.loads((repo / "metrics/spectrum.json").read_text())
    assert {"rho", "rho_skip1", "pi_ratio"} <= set(spectrum)
    assert len(mlflow_runs(repo)) == 1
    logged = {a.path for a in mlflow_client(repo).list_artifacts(mlflow_runs(repo)[0].info.run_id, "plots")}
    assert {"plots/gallery.png", "plots/spectrum.png", "plots/train_curve.png"} <= logged
    check_registered_model(repo)

    noop = run([sys.executable, "-m", "dvc", "repro"], repo)
    assert ran_stages(noop.stdout) == set()
    assert len(mlflow_runs(repo)) == 1, "a no-op repro must not add an MLflow run"

    cases = [
        ({"eval": {"kmeans_iters": 6}}, {"evaluate", "report"}),
        ({"spectrum": {"skip_largest": [0, 1, 9]}}, {"spectrum", "report"}),
        ({"gallery": {"k": 5, "worst": 2}}, {"gallery", "report"}),
        ({"index": {"metric": "ip"}}, {"index", "evaluate", "gallery", "report"}),
        ({"index": {"type": "hnsw"}}, {"index", "evaluate", "gallery", "report"}),
        ({"index": {"type": "ivf", "nlist": 4, "nprobe": 1}}, {"index", "evaluate", "gallery", "report"}),
        # knobs of methods that are not selected: configure reruns, its output is unchanged, and
        # DVC skips train and everything after it
        ({"loss": {"arcface": {"scale": 30.0}}, "miner": {"semihard": {"margin": 0.5}}}, {"configure"}),
        ({"miner": {"name": "random"}}, {"configure", "train", "embed", "index", "evaluate", "spectrum", "gallery", "report"}),
    ]
    reports = 1
    for changes, expected in cases:
        set_params(repo, **changes)
        result = run([sys.executable, "-m", "dvc", "repro"], repo)
        ran = ran_stages(result.stdout)
        # report reruns only when a result changed (an eval-only change can reproduce
        # eval.json byte for byte); index changes always do, through index/meta.json.
        if expected == {"configure"} or ("index" in changes and "miner" not in changes):
            assert ran == expected, changes
        else:
            assert expected - {"report"} <= ran <= expected, changes
        reports += "report" in ran

    assert json.loads((repo / "index/meta.json").read_text())["factory"] == "IVF4,Flat"
    assert 0.0 <= json.loads((repo / "metrics/eval.json").read_text())["index_top1_agreement"] <= 1.0
    assert reports >= 5
    runs = mlflow_runs(repo)
    assert len(runs) == reports, "one MLflow run per reported result"
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.data.params["miner.name"] == "random"
    assert "eval/recall_at_1" in latest.data.metrics and "space/rho" in latest.data.metrics


def test_malformed_params_fail_fast_and_change_nothing(repo):
    run([sys.executable, "-m", "dvc", "repro"], repo)
    before = snapshot(repo)
    original = (repo / "params.yaml").read_text()
    set_params(repo, train={"epochs": "many"}, eval={"kmeans_iters": 7})
    try:
        result = run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(original)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error in stage")]
    assert errors and "train.epochs" in errors[0]
    assert snapshot(repo) == before


def test_temp_experiment_logs_to_the_repository_store(repo):
    """`dvc exp run --temp` runs in .dvc/tmp/exps/...; its MLflow run must land in the
    repository's mlflow.db (via DVC_ROOT), tagged with the experiment name."""
    run([sys.executable, "-m", "dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline", "--allow-empty"], repo)
    before = len(mlflow_runs(repo))
    result = run([sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", "r16", "-S", "eval.recall_at=[1,2,4,16]"], repo)
    assert ran_stages(result.stdout) == {"evaluate", "report"}
    runs = mlflow_runs(repo)
    assert len(runs) == before + 1
    tagged = [r for r in runs if r.data.tags.get("dvc.exp_name") == "r16"]
    assert len(tagged) == 1 and tagged[0].data.params["eval.recall_at"] == "1,2,4,16"
    assert "eval/recall_at_16" in tagged[0].data.metrics
    assert tagged[0].data.tags.get("dml.model_run_id"), "a result of an existing model links the run holding it"


def test_prefect_flow_runs_the_dvc_dag(repo, tmp_path):
    """The flow reads the DAG from dvc.yaml and lets DVC decide: after a spectrum-only change it
    runs exactly spectrum and report, and leaves the pipeline up to date."""
    from pipelines.dvc_flow import stage_dag

    dag = stage_dag(repo)
    assert set(dag) == set(ALL_STAGES) and list(dag)[0] == "prepare" and list(dag)[-1] == "report"
    assert dag["evaluate"] == ["embed", "index"]
    assert dag["report"] == ["evaluate", "gallery", "index", "spectrum", "train"]
    assert dag["gallery"] == ["configure", "embed", "index", "prepare"]
    assert dag["train"] == ["configure", "preprocess", "pretrain"] and dag["configure"] == []
    assert dag["pretrain"] == ["preprocess"]
    run([sys.executable, "-m", "dvc", "repro"], repo)
    set_params(repo, spectrum={"skip_largest": [0, 2]})
    env_home = tmp_path / "prefect"
    os.environ["PREFECT_HOME"] = str(env_home)
    try:
        result = run([sys.executable, "-m", "pipelines.dvc_flow", "--root", str(repo)], ROOT)
    finally:
        os.environ.pop("PREFECT_HOME", None)
    assert result.stdout.strip().splitlines()[-1] == "ran: spectrum, report"
    status = run([sys.executable, "-m", "dvc", "status", "--quiet"], repo, check=False)
    assert status.returncode == 0, status.stdout


@pytest.mark.parametrize(("loss", "miner", "normalised"), [("npair", "npair", False), ("proxyanchor", "none", True)])
def test_experiment_with_another_loss_from_one_override(repo, loss, miner, normalised):
    """`dvc exp run -S loss.name=...` alone is enough: miner.name and model.normalize are `auto`
    in params.yaml, so the loss's own miner and normalisation are resolved into configs/train.json;
    the unnormalised N-pair embeddings reach the evaluation unnormalised, as in the paper."""
    from dml.embeddings import read_embeddings

    set_params(repo, miner={"name": "auto"}, model={"normalize": "auto"}, loss={"name": "margin"})
    run([sys.executable, "-m", "dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline", "--allow-empty"], repo)
    result = run([sys.executable, "-m", "dvc", "exp", "run", "-n", f"zoo-{loss}", "-S", f"loss.name={loss}"], repo)
    assert {"configure", "train", "embed", "evaluate"} <= ran_stages(result.stdout)
    config = json.loads((repo / "configs/train.json").read_text())
    assert config["loss"]["name"] == loss and config["miner"]["name"] == miner
    assert config["model"]["normalize"] is normalised
    norms = np.linalg.norm(read_embeddings(repo / "embeddings/test.parquet").vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4) is normalised
    assert 0.0 < json.loads((repo / "metrics/eval.json").read_text())["recall_at_1"] <= 1.0
    run(["git", "checkout", "--", "params.yaml"], repo)
    run([sys.executable, "-m", "dvc", "checkout", "--force"], repo, check=False)
