"""The DVC experiments of the current baseline commit, read through ``dvc exp show --json`` (DVC's
documented machine-readable output): names, commits, params and metrics. A sweep reads them to
skip runs that are done and to aggregate results; nothing of the experiments is stored twice."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ExperimentsError(RuntimeError):
    """DVC could not list the experiments (one line)."""


@dataclass(frozen=True)
class Experiment:
    name: str
    rev: str  # the experiment's commit (refs/exps/...)
    baseline: str  # the commit it was run from
    params: dict[str, Any]  # params.yaml as the experiment ran it
    metrics: dict[str, dict[str, Any]]  # metrics file -> its content


def parse_exp_show(data: list[dict[str, Any]], params_file: str = "params.yaml") -> dict[str, Experiment]:
    """``{name: Experiment}`` of the finished experiments in ``dvc exp show --json`` output
    (running, queued and failed ones have an executor or an error and are left out)."""
    out: dict[str, Experiment] = {}
    for baseline in data:
        for group in baseline.get("experiments") or []:
            if group.get("executor"):
                continue
            exp = group["revs"][0]
            body = exp.get("data") or {}
            if exp.get("error") or body.get("error") or not exp.get("name"):
                continue
            params = ((body.get("params") or {}).get(params_file) or {}).get("data") or {}
            metrics = {path: (entry or {}).get("data") or {} for path, entry in (body.get("metrics") or {}).items()}
            out[exp["name"]] = Experiment(exp["name"], exp["rev"], baseline["rev"], params, metrics)
    return out


def list_experiments(root: Path | str) -> dict[str, Experiment]:
    """The finished experiments of HEAD (the baseline a ``dvc exp run`` from ``root`` uses)."""
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExperimentsError(f"dvc exp show failed in {root} (exit {result.returncode}): {last}")
    text = result.stdout.strip()
    return parse_exp_show(json.loads(text[text.index("[") :]) if text else [])


def read_at(root: Path | str, path: str, rev: str) -> str | None:
    """A file of the repository as committed in ``rev`` (DVC-tracked outputs from the cache);
    None when it is not there."""
    import dvc.api

    try:
        return dvc.api.read(path, repo=str(root), rev=rev)
    except Exception:  # noqa: BLE001 - missing file, output not in the cache, ...: no value
        return None
