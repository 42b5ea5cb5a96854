"""A tiny sweep (tests/sweep_stub: 2 variants x 2 seeds, a one-stage pipeline that computes its
metrics from the params) on a loopback Dask cluster of 1 and of 2 one-thread workers, and what
the cluster mode adds per experiment: a worker's first clone and checkout, ``dvc exp push`` of
an experiment (ref, outputs, run cache) and the coordinator's ``dvc exp pull`` of it.

Everything runs on this machine (scheduler, workers, bare git remote, folder DVC remote, MLflow
server on 127.0.0.1), so the wall times measure the mechanism, not a network.

Usage: ``python benchmarks/cluster_sweep.py`` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from ddp_worker import free_port  # noqa: E402
from test_sweep_cluster import cluster_project, loopback_cluster, run_cluster_sweep  # noqa: E402
from test_tracking import _start_server, _stop_server  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def sweep_on(workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo = cluster_project(base)
        port = free_port()
        server = _start_server(port, base / "mlflow.db", base / "mlartifacts")
        try:
            with loopback_cluster(base, workers=workers) as (address, workdirs, _):
                started = time.perf_counter()
                result = run_cluster_sweep(repo, address, f"http://127.0.0.1:{port}")
                wall = time.perf_counter() - started
                per_exp = [float(m) for m in re.findall(r": ran in ([\d.]+) s on ", result.stdout)]
                out = {"wall_s": wall, "experiment_s_mean": sum(per_exp) / len(per_exp)}
                if workers == 1:
                    dvc = [sys.executable, "-m", "dvc"]
                    out["clone_s"] = timed(["git", "clone", "-q", str(base / "remote.git"), str(base / "fresh")], base)
                    out["push_s"] = timed([*dvc, "exp", "push", "--force", "--run-cache", "origin", "tiny-dist-s0"], workdirs[0])
                    out["pull_s"] = timed([*dvc, "exp", "pull", "--force", "origin", "tiny-dist-s0"], repo)
                    local = timed([*dvc, "exp", "run", "--temp", "-n", "local-probe", "-S", "train.seed=7"], repo)
                    out["local_exp_run_s"] = local
        finally:
            _stop_server(server)
    return out


def main() -> None:
    one = sweep_on(1)
    two = sweep_on(2)
    print(f"tiny sweep (4 experiments), 1 worker: {one['wall_s']:.1f} s wall, {one['experiment_s_mean']:.1f} s per experiment on the worker")
    print(f"tiny sweep (4 experiments), 2 workers: {two['wall_s']:.1f} s wall, {two['experiment_s_mean']:.1f} s per experiment; "
          f"speed-up {one['wall_s'] / two['wall_s']:.2f}x")
    print(f"per experiment: first clone + checkout {one['clone_s']:.2f} s (once per worker), dvc exp push {one['push_s']:.2f} s, "
          f"coordinator dvc exp pull {one['pull_s']:.2f} s; the same experiment as a local dvc exp run --temp: {one['local_exp_run_s']:.1f} s")


if __name__ == "__main__":
    main()
