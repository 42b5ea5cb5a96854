"""Fault tests: malformed params give one line and change no output; SIGKILLed training, rerun
with the same or a changed param, ends with the uninterrupted result and a complete, correctly
labelled MLflow record; leftovers of killed writers are recovered; unsafe files are refused."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_pipeline import _merge, mlflow_runs, run, set_params, tiny_project

STAGES = ["prepare", "preprocess", "configure", "pretrain", "train", "embed", "index", "evaluate", "spectrum", "report"]
OUTPUTS = ["configs", "models", "embeddings", "index", "metrics", "plots", "data/prepared", "data/preprocessed"]


def _tree_hash(repo: Path) -> dict[str, str]:
    out = {}
    for name in OUTPUTS:
        for path in sorted((repo / name).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The tiny pipeline, run once (a git copy of the project)."""
    repo = tiny_project(tmp_path_factory.mktemp("reliability"))
    run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo


# (change to params.yaml, text the one error line must contain, stages to run: None = every stage)
# Schema errors fail every stage before it reads anything; the others fail in the stage that
# meets them (after the params check).
MALFORMED: list[tuple[dict, str, list[str] | None]] = [
    ({"train": {"epochs": "many"}}, "train.epochs", None),
    ({"train": {"epochs": 0}}, "train.epochs", None),
    ({"train": {"epochs": 2.5}}, "train.epochs", None),
    ({"train": {"batch_size": -4}}, "train.batch_size", None),
    ({"train": {"seed": -1}}, "train.seed", None),
    ({"train": {"bogus": 1}}, "train.bogus", None),
    ({"optim": {"lr": float("inf")}}, "optim.lr", None),
    ({"optim": {"lr": float("nan")}}, "optim.lr", None),
    ({"optim": {"lr": 0}}, "optim.lr", None),
    ({"optim": {"weight_decay": -1}}, "optim.weight_decay", None),
    ({"optim": {"name": "sgd"}}, "optim.name", None),
    ({"loss": {"name": "focal"}}, "loss.name", None),
    ({"loss": {"margin": {"alpha": -0.2}}}, "loss.margin.alpha", None),
    ({"loss": {"margin": {"optim": {"lr": float("inf")}}}}, "loss.margin.optim.lr", None),
    ({"loss": {"arcface": {"margin": 3.0}}}, "loss.arcface.margin", None),
    ({"loss": {"softtriple": {"centers_per_class": 0}}}, "loss.softtriple.centers_per_class", None),
    ({"loss": {"histogram": {"nodes": 2}}}, "loss.histogram.nodes", None),
    ({"loss": {"proxynca": {"scale": float("-inf")}}}, "loss.proxynca.scale", None),
    ({"loss": {"name": "arcface"}, "miner": {"name": "distance"}}, "miner.name", None),
    ({"loss": {"name": "npair"}, "miner": {"name": "lifted"}}, "miner.name", None),
    ({"loss": {"name": "margin"}, "miner": {"name": "none"}}, "miner.name", None),
    ({"loss": {"name": "lifted"}, "model": {"normalize": True}}, "model.normalize", None),
    ({"miner": {"name": "hardest"}}, "miner.name", None),
    ({"miner": {"distance": {"lower_cutoff": 1.5, "upper_cutoff": 1.0}}}, "miner.distance", None),
    ({"miner": {"rho_distance": {"p": 1.5}}}, "miner.rho_distance.p", None),
    ({"miner": {"rho_p": 0.3}}, "miner.rho_p", None),
    ({"sampler": {"name": "coreset"}}, "sampler.name", None),
    ({"sampler": {"class_balanced": {"samples_per_class": 1}}}, "sampler.class_balanced.samples_per_class", None),
    ({"sampler": {"class_balanced": {"samples_per_class": 32}}}, "train.batch_size", None),
    ({"train": {"batch_size": 30}}, "train.batch_size", None),
    ({"model": {"name": "vgg"}}, "model.name", None),
    ({"model": {"embed_dim": 1}}, "model.embed_dim", None),
    ({"model": {"pretrained": True}}, "model.pretrained", None),
    ({"data": {"train_fraction": 1.5}}, "data.train_fraction", None),
    ({"data": {"glyphs": {"difficulty": "extreme"}}}, "data.glyphs.difficulty", None),
    ({"data": {"val_classes": 1.0}}, "data.val_classes", None),
    ({"data": {"name": "cub200", "root": "data/raw/nowhere"}}, "data.root", ["prepare"]),
    ({"preprocess": {"channels": 2}}, "preprocess.channels", None),
    ({"index": {"type": "lsh"}}, "index.type", None),
    ({"index": {"type": "ivf", "nlist": 4, "nprobe": 8}}, "index.nprobe", None),
    ({"eval": {"recall_at": [1, 0]}}, "eval.recall_at", None),
    ({"eval": {"kmeans_iters": "x"}}, "eval.kmeans_iters", None),
    ({"spectrum": {"skip_largest": [0, 128]}}, "spectrum.skip_largest", None),
    ({"spectrum": {"split": "val"}}, "spectrum.split", None),
    ({"tracking": {"experiment": ""}}, "tracking.experiment", None),
    ({"evaluation": {"recall_at": [1]}}, "evaluation", None),
    # values the schema cannot judge without the data: the stage that meets them (after the
    # stages before it, which succeed)
    ({"train": {"batch_size": 4096}}, "train.batch_size", ["configure", "train"]),
    ({"eval": {"recall_at": [1, 1000]}}, "eval.recall_at", ["evaluate"]),
]


def _run_stage_in_process(repo: Path, stage: str) -> tuple[int, str]:
    """``python -m stages.<stage>`` in-process (fast: no interpreter start per variant)."""
    import importlib

    module = importlib.import_module(f"stages.{stage}")
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            module.main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        os.chdir(cwd)
    return code, err.getvalue()


@pytest.mark.e2e
def test_malformed_params_give_one_line_and_change_no_output(built, monkeypatch):
    """Reference: the contract of stages/_common.py: for each of the variants, every stage that
    runs exits 1 with exactly one stderr line naming the key, and no output file changes (but
    configs/train.json, which configure rewrites for a valid config, as DVC would)."""
    assert len(MALFORMED) >= 40
    monkeypatch.setenv("DVC_ROOT", str(built))
    monkeypatch.syspath_prepend(str(built))
    original = (built / "params.yaml").read_text()
    before = _tree_hash(built)
    try:
        for changes, key, stages in MALFORMED:
            raw = yaml.safe_load(original)
            _merge(raw, changes)
            (built / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            *succeed, failing = stages or [None]
            for stage in succeed:
                assert _run_stage_in_process(built, stage)[0] == 0, (changes, stage)
            for stage in [failing] if failing else STAGES:
                code, err = _run_stage_in_process(built, stage)
                lines = err.strip().splitlines()
                assert code == 1 and len(lines) == 1, (changes, stage, err)
                assert lines[0].startswith(f"error in stage {stage}: ") and key in lines[0], (changes, stage, lines)
    finally:
        (built / "params.yaml").write_text(original)
        _run_stage_in_process(built, "configure")  # back to the original resolved config
    assert _tree_hash(built) == before


# ----------------------------------------------------------------------------- SIGKILL

KILL_DURING_FIRST_EPOCH = """
import os, signal, dml.training.metric as t
calls = 0
original = t.MetricLearning.batch_loss
def step(*args, **kwargs):
    global calls
    calls += 1
    if calls == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
t.MetricLearning.batch_loss = step
"""
KILL_AFTER_CHECKPOINT = """
import os, signal, dml.tracking as tr
original = tr.TrainingRun.log_epoch
def log_epoch(self, step, record):
    if step == 2:  # epoch 2's checkpoint is written, its tracking record is not
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, step, record)
tr.TrainingRun.log_epoch = log_epoch
"""


def _train(repo: Path, fault: str = "") -> subprocess.CompletedProcess:
    code = fault + "\nimport runpy\nrunpy.run_module('stages.train', run_name='__main__')\n"
    run([sys.executable, "-m", "stages.configure"], repo)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def _weights(repo: Path) -> dict[str, torch.Tensor]:
    return torch.load(repo / "models/model.pt", map_location="cpu", weights_only=True)["state_dict"]


def _training_runs(repo: Path) -> list:
    return [r for r in mlflow_runs(repo) if r.data.tags.get("dml.run_key", "").startswith("train-")]


def _curve(repo: Path, run_id: str) -> list[int]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, "train/loss")]


@pytest.fixture()
def fresh(built, tmp_path) -> Path:
    """A copy of the built tiny pipeline with an empty tracking store and 3 epochs."""
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-a", str(built), str(repo)], check=True)
    for name in ("mlflow.db", "mlartifacts", ".dml", "checkpoints"):
        subprocess.run(["rm", "-rf", str(repo / name)], check=True)
    set_params(repo, train={"epochs": 3})
    return repo


@pytest.mark.e2e
@pytest.mark.parametrize("fault", [KILL_DURING_FIRST_EPOCH, KILL_AFTER_CHECKPOINT], ids=["first-epoch", "after-checkpoint"])
def test_sigkilled_training_rerun_matches_uninterrupted_and_record_is_complete(fresh, fault):
    """Reference: an uninterrupted training of the same params in the same repository: after a
    SIGKILL and a rerun the model is bit-identical, and MLflow holds one training run, FINISHED,
    each epoch of its curve exactly once (the killed attempt's run is the resumed one or, if no
    checkpoint existed yet, marked KILLED)."""
    assert _train(fresh).returncode == 0
    reference = _weights(fresh)
    for name in ("mlflow.db", "mlartifacts", ".dml"):
        subprocess.run(["rm", "-rf", str(fresh / name)], check=True)

    killed = _train(fresh, fault)
    assert killed.returncode == -signal.SIGKILL
    rerun = _train(fresh)
    assert rerun.returncode == 0, rerun.stderr
    after = _weights(fresh)
    assert reference.keys() == after.keys() and all(torch.equal(reference[k], after[k]) for k in reference)

    runs = _training_runs(fresh)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1 and _curve(fresh, finished[0].info.run_id) == [1, 2, 3]
    assert all(r.info.status == "KILLED" for r in runs if r is not finished[0])
    assert not (fresh / "checkpoints/train.pt").exists()


@pytest.mark.e2e
def test_killed_then_rerun_with_changed_param_never_mixes_records(fresh):
    """Reference: the labelling contract: a run killed after epoch 2 and rerun with optim.lr
    changed leaves the killed run KILLED with the old lr and its own epochs, and a new run with
    the new lr, FINISHED, with a complete curve of its own."""
    killed = _train(fresh, KILL_AFTER_CHECKPOINT)
    assert killed.returncode == -signal.SIGKILL
    set_params(fresh, optim={"lr": 0.0025})
    assert _train(fresh).returncode == 0
    runs = {r.info.status: r for r in _training_runs(fresh)}
    assert set(runs) == {"KILLED", "FINISHED"}
    assert runs["KILLED"].data.params["optim.lr"] == "0.001" and _curve(fresh, runs["KILLED"].info.run_id) == [1]
    assert runs["FINISHED"].data.params["optim.lr"] == "0.0025"
    assert _curve(fresh, runs["FINISHED"].info.run_id) == [1, 2, 3]
    model = torch.load(fresh / "models/model.pt", map_location="cpu", weights_only=True)
    assert model["training_config"]["optim"]["lr"] == 0.0025


# ----------------------------------------------------------------------------- files


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_and_model_files_cannot_run_code(tmp_path, monkeypatch):
    """Reference: torch.load(weights_only=True) semantics: a pickle that would run code is refused
    with one line naming the file, and nothing runs."""
    from dml.errors import DatasetError
    from dml.model_file import load_model
    from dml.training.loop import read_checkpoint

    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "train.pt"
    bad.write_bytes(pickle.dumps({"fingerprint": "x", "payload": _Exploit()}))
    with pytest.raises(DatasetError, match=r"train.pt: not a training checkpoint this pipeline wrote"):
        read_checkpoint(bad, "x")
    with pytest.raises(DatasetError, match=r"train.pt: not a trained model this pipeline wrote"):
        load_model(bad)
    assert not (tmp_path / "pwned").exists()


def test_leftovers_of_killed_writers_are_recovered(tmp_path):
    """Reference: dml/io.py's swap protocol: a dead writer's temporary folder is removed; the
    previous version it had moved aside is put back when the swap did not happen."""
    from dml.io import atomic_dir

    dead = 2**22 + 12345  # beyond pid_max on Linux: no such process
    out = tmp_path / "prepared"
    (tmp_path / f".prepared.tmp-{dead}").mkdir()
    (tmp_path / f".prepared.old-{dead}").mkdir()
    (tmp_path / f".prepared.old-{dead}" / "a.txt").write_text("previous")
    with atomic_dir(out) as tmp:
        assert (out / "a.txt").read_text() == "previous"  # restored before the new write begins
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert json.dumps(sorted(os.listdir(tmp_path))) == '["prepared"]'
