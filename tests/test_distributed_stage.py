"""The train stage over several processes, as a user runs it (``python -m stages.train`` with
``distributed.*`` in params.yaml; torch's elastic agent starts the ranks, gloo over loopback):
two machines of one process each compute what one machine of two processes computes; a rank
killed mid-run is one line, keeps the checkpoint, and the rerun resumes to the uninterrupted
result."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from ddp_worker import free_port
from test_pipeline import run, set_params, tiny_project

pytestmark = pytest.mark.e2e
EPOCHS = 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The tiny pipeline up to configure (trainable BatchNorm: per-rank batch statistics)."""
    repo = tiny_project(tmp_path_factory.mktemp("ddp-stage"))
    set_params(repo, train={"epochs": EPOCHS, "batch_size": 32, "num_threads": 1}, monitor={"every": 2, "queries": 50})
    for stage in ("prepare", "preprocess", "pretrain"):
        run([sys.executable, "-m", f"stages.{stage}"], repo)
    return repo


def copy_of(prepared: Path, where: Path, **distributed) -> Path:
    shutil.copytree(prepared, where, symlinks=True)
    set_params(where, distributed={"master_port": free_port(), **distributed})
    run([sys.executable, "-m", "stages.configure"], where)
    return where


def train(repo: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "stages.train"], repo, check=check)


def weights(repo: Path) -> dict[str, torch.Tensor]:
    return torch.load(repo / "models/model.pt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def one_node_two_processes(prepared, tmp_path_factory) -> Path:
    repo = copy_of(prepared, tmp_path_factory.mktemp("n1") / "repo", nproc_per_node=2)
    result = train(repo)
    assert f"epoch {EPOCHS}:" in result.stdout and result.stdout.count(f"epoch {EPOCHS}:") == 1  # rank 0 alone prints
    return repo


def test_two_machines_of_one_process_equal_one_machine_of_two(one_node_two_processes, prepared, tmp_path):
    port = free_port()
    nodes = [copy_of(prepared, tmp_path / f"node{rank}", nnodes=2, node_rank=rank, master_port=port) for rank in (0, 1)]
    started = [subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=node, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**__import__("os").environ, "PYTHONPATH": str(node)}) for node in nodes]
    outputs = [process.communicate(timeout=600) for process in started]
    assert [process.returncode for process in started] == [0, 0], outputs
    assert (nodes[0] / "models/model.pt").is_file() and not (nodes[1] / "models/model.pt").exists()  # one writer
    expected = weights(one_node_two_processes)
    got = weights(nodes[0])
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_killed_rank_is_one_line_and_the_rerun_resumes_to_the_same_model(one_node_two_processes, prepared, tmp_path):
    repo = copy_of(prepared, tmp_path / "repo", nproc_per_node=2)
    env = {**__import__("os").environ, "PYTHONPATH": str(repo)}
    launcher = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
    checkpoint = repo / "checkpoints/train.pt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launcher.poll() is None, "training ended before its first checkpoint"
    rank1 = [p for p in psutil.Process(launcher.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    assert len(rank1) == 1
    rank1[0].kill()
    out, err = launcher.communicate(timeout=600)
    lines = err.strip().splitlines()
    assert launcher.returncode == 1 and lines[-1].startswith("error in stage train: rank 1 of 2 stopped (signal SIGKILL)")
    assert "checkpoint is kept" in lines[-1]
    assert "Traceback" not in err and len([line for line in lines if "error" in line.lower()]) == 1, err
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # intact: written atomically by rank 0
    assert 1 <= len(state["curve"]) < EPOCHS
    resumed = train(repo)
    assert f"resuming from {Path('checkpoints/train.pt')}" in resumed.stdout
    expected = weights(one_node_two_processes)
    for name, value in weights(repo).items():
        assert torch.equal(value, expected[name]), name
