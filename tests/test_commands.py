"""The commands fail well and say where to look: a bad stage name is one line before anything
starts, the query command finds its repository from the current folder (or says to pass
--root), a negative spectrum count is a params error, and a run ends with where its results are."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dml.config import parse_params
from dml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def test_negative_spectrum_count_is_a_params_error():
    """Reference: a count of dropped singular values is >= 0 (there is no rho_skip-2)."""
    with pytest.raises(ConfigError, match=r"spectrum\.skip_largest: counts of dropped values must be >= 0, got \[0, -2\]"):
        parse_params({"spectrum": {"skip_largest": [0, -2]}})
    assert parse_params({"spectrum": {"skip_largest": [0, 3]}}).spectrum.skip_largest == (0, 3)


@pytest.mark.integration
def test_unknown_stage_is_one_line_before_prefect_starts():
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipelines.dvc_flow", "--root", str(ROOT), "--stage", "nosuch"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --stage: no stage named 'nosuch' in dvc.yaml; stages: ") and "'train'" in lines[0]
    assert "prefect" not in result.stdout.lower() + result.stderr.lower()
    assert time.perf_counter() - started < 60


@pytest.mark.integration
def test_list_shows_every_stage_of_dvc_yaml_after_its_upstream_stages():
    """Reference: dvc.yaml's stages and their declared dependency order (train after configure,
    report last)."""
    result = subprocess.run([sys.executable, "-m", "pipelines.dvc_flow", "--root", str(ROOT), "--list"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    listed = [line.split(" <- ")[0] for line in result.stdout.strip().splitlines()]
    assert sorted(listed) == sorted(STAGES)
    assert listed.index("configure") < listed.index("train") < listed.index("embed") and listed[-1] == "report"
    usage = subprocess.run([sys.executable, "-m", "pipelines.dvc_flow", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert usage.stdout.startswith("usage: python -m pipelines.dvc_flow")


def test_query_finds_its_repository_from_a_subfolder_or_says_to_pass_root(tmp_path, monkeypatch, capsys):
    from dml.query import main

    repo = tmp_path / "repo"
    (repo / "sub" / "deeper").mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(repo / "sub" / "deeper")
    assert main(["some.png"]) == 1
    error = capsys.readouterr().err.strip()
    # found the repository: the error is about its missing outputs, named under it
    assert "pass --root" not in error and str(repo) in error
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert main(["some.png"]) == 1
    assert capsys.readouterr().err.strip() == f"error: no pipeline repository (dvc.yaml) in {outside} or above; pass --root"


def test_report_ends_with_where_to_look():
    from stages.report import where_to_look

    local = where_to_look("sqlite:////repo/mlflow.db")
    assert "dvc metrics show" in local and "`mlflow ui --backend-store-uri sqlite:////repo/mlflow.db`" in local
    assert "http://127.0.0.1:5000" in local
    assert where_to_look("http://10.0.0.5:5000").endswith("http://10.0.0.5:5000 in a browser (every run, side by side).")
