"""The pipeline reruns and reproduces itself: a forced rerun and a fresh clone write the same
bytes, and the pretrain stage feeds training and is shared by seeds. Apart from
tests/test_pipeline.py so that the two files' end-to-end runs share the cores (pytest-xdist
gives each file to one worker); each test starts from its own `dvc repro`."""

from __future__ import annotations

import json
import sys

import pytest

from test_pipeline import ALL_STAGES, mlflow_runs, ran_stages, run, set_params, tiny_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return tiny_project(tmp_path_factory.mktemp("pipeline-rerun"))


def test_forced_rerun_writes_the_same_outputs(repo):
    """Reference: the first run's files: `dvc repro --force` of the same params rewrites every
    metric, curve, plot, index record, model and embedding byte for byte (no wall-clock time, run
    id or absolute path in them: those go to the git-ignored .dml/), so dvc.lock records the same
    hashes on a rerun."""
    stable = ["metrics/eval.json", "metrics/spectrum.json", "metrics/train.json", "metrics/train_curve.csv", "index/meta.json",
              "models/model.pt", "embeddings/test.parquet", "embeddings/train.parquet", "configs/train.json",
              "plots/spectrum.csv", "plots/spectrum.png", "plots/gallery.png", "plots/train_curve.png", "plots/train_spectrum.png",
              "data/prepared/dataset.json", "data/prepared/manifest.parquet", "data/preprocessed/stats.json", "dvc.lock"]
    run([sys.executable, "-m", "dvc", "repro"], repo)
    before = {name: (repo / name).read_bytes() for name in stable}
    assert json.loads((repo / ".dml/timings/train.json").read_text())["train_seconds"] > 0
    assert "build_seconds" in json.loads((repo / ".dml/timings/index.json").read_text())
    assert json.loads((repo / ".dml/report.json").read_text())["run_key"]  # the MLflow reference, machine-local
    run([sys.executable, "-m", "dvc", "repro", "--force"], repo)
    changed = [name for name in stable if (repo / name).read_bytes() != before[name]]
    assert changed == []


def test_pretrain_on_source_classes_feeds_training_and_is_shared_by_seeds(repo):
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, pretrain={"epochs": 1, "batch_size": 16}, train={"epochs": 1})
        failed = run([sys.executable, "-m", "dvc", "repro"], repo, check=False)
        errors = [line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("error in stage")]
        assert failed.returncode != 0 and errors and "'source' split" in errors[0] and "source_fraction" in errors[0]

        set_params(repo, data={"glyphs": {"source_fraction": 0.25}})
        first = run([sys.executable, "-m", "dvc", "repro"], repo)
        assert {"prepare", "pretrain", "train"} <= ran_stages(first.stdout)
        prepared = json.loads((repo / "data/prepared/dataset.json").read_text())["splits"]
        assert prepared["source"]["classes"] == 4 and prepared["train"]["classes"] == 6  # 16 classes: 4 source, half of 12
        pretrained = json.loads((repo / "metrics/pretrain.json").read_text())
        assert pretrained["epochs"] == 1 and pretrained["classes"] == 4 and pretrained["images"] == 32
        assert json.loads((repo / "metrics/train.json").read_text())["initialisation"] == "pretrained on source"

        set_params(repo, train={"seed": 1})
        reseeded = run([sys.executable, "-m", "dvc", "repro"], repo)
        assert "train" in ran_stages(reseeded.stdout) and "pretrain" not in ran_stages(reseeded.stdout)
    finally:
        (repo / "params.yaml").write_text(original)


def test_fresh_clone_reproduces_the_committed_dvc_lock(repo, tmp_path):
    """Reference: dvc.lock as committed after `dvc repro`. A git clone at another path (no DVC
    cache, no .dml/, an MLflow store of its own) reruns every stage and leaves dvc.lock
    byte-identical: no DVC output holds a machine-specific value. The clone's report still finds
    its training run (the result lands in it: one MLflow run)."""
    run([sys.executable, "-m", "dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc.lock", "--allow-empty"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    result = run([sys.executable, "-m", "dvc", "repro"], clone)
    assert ran_stages(result.stdout) == set(ALL_STAGES)
    assert (clone / "dvc.lock").read_bytes() == (repo / "dvc.lock").read_bytes()
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
    runs = mlflow_runs(clone)
    assert len(runs) == 1 and runs[0].data.tags["dml.run_key"].startswith("train-")
    assert "eval/recall_at_1" in runs[0].data.metrics
