"""A sweep's experiments on the workers of a running Dask cluster (``pipelines.sweep --cluster``).

The sweep stays one Prefect flow; its experiment tasks run on Dask workers through prefect-dask's
``DaskTaskRunner``. Code and results travel through the two remotes a DVC project already has:

- **Code.** Each worker process keeps its own clone of the git remote (``$DML_WORKDIR``, else a
  folder in the temp dir per worker process) and checks out the sweep's commit, which must be
  on that remote: the coordinator refuses an uncommitted workspace or an unpushed commit.
- **Results.** The worker runs ``dvc exp run --temp -n <name>`` there, then ``dvc exp push``es
  the experiment: its ref to the git remote, its outputs and the run cache to the default DVC
  remote (committed in ``.dvc/config``). The coordinator ``dvc exp pull``s each finished one,
  so ``dvc exp show``, ``--show`` and ``--report`` work as for a local sweep.
- **Upstream stages once.** Before running, a worker pulls the DVC remote's run cache
  (``dvc exp run --pull``): a stage that any worker already ran with the same inputs (prepare,
  preprocess, pretrain of a condition) is restored, not recomputed.
- **One MLflow.** Workers log to the coordinator's tracking server (an ``http(s)://`` URI is
  required); their outboxes sync there and nest under the sweep's run.
- **Security.** A ``tls://`` scheduler is reached with ``--tls-ca-file``, ``--tls-cert`` and
  ``--tls-key`` (distributed's TLS; a client without a certificate the CA signed is refused). The
  tracking server the project starts binds 127.0.0.1 unless told otherwise, and then needs
  MLflow's basic-auth app (``pipelines/tracking_server.py``).
- **Slots.** ``--resources GPU=1`` makes each experiment ask the scheduler for one unit of a
  resource the workers declare (``dask worker ... --resources GPU=1``, one worker per GPU with
  its ``CUDA_VISIBLE_DEVICES``), so N GPUs run N experiments at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dml.studies.sweep import SweepError
from pipelines._process import dvc_command, stream

WORKDIR_ENV = "DML_WORKDIR"  # a worker's clone of the repository


@dataclass(frozen=True)
class Cluster:
    address: str  # the Dask scheduler: tcp://host:8786 (tls://... with --tls-*)
    remote: str  # the git remote's name in the coordinator's repository
    git_url: str  # its URL, which workers clone
    commit: str  # the sweep's commit (HEAD), on that remote
    tracking_uri: str  # the shared MLflow server
    resources: dict[str, float] = field(default_factory=dict)  # what one experiment asks of a worker
    tls: tuple[str, str, str] | None = None  # (CA file, client certificate, client key): a tls:// scheduler


def _git(root: Path | str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def prepare(root: Path | str, address: str, remote: str, tracking_uri: str, resources: dict[str, float],
            tls: tuple[str, str, str] | None = None) -> Cluster:
    """The cluster target of a sweep from ``root``, or a one-line :class:`SweepError` saying what
    is missing (changes not committed, the commit not on the git remote, no default DVC remote,
    no shared MLflow server)."""
    if _git(root, "status", "--porcelain", "--untracked-files=no").stdout.strip():
        raise SweepError("--cluster: the workspace has uncommitted changes to tracked files; every worker runs the "
                         "sweep's commit, so commit them (or stash them) first")
    url = _git(root, "remote", "get-url", remote)
    if url.returncode != 0:
        raise SweepError(f"--cluster: no git remote {remote!r} in {root} (set --git-remote, or git remote add {remote} URL)")
    commit = _git(root, "rev-parse", "HEAD").stdout.strip()
    _git(root, "fetch", "-q", remote)
    holders = _git(root, "branch", "-r", "--contains", commit, "--format=%(refname:short)").stdout.split()
    if not any(ref.startswith(f"{remote}/") for ref in holders):
        raise SweepError(f"--cluster: commit {commit[:12]} is not on git remote {remote!r}; push it first (git push {remote} HEAD)")
    default = subprocess.run(dvc_command("remote", "default", "--project"), cwd=root, capture_output=True, text=True)
    if not default.stdout.strip():
        raise SweepError("--cluster: no default DVC remote in .dvc/config; workers push their outputs there "
                         "(dvc remote add -d NAME URL, then commit .dvc/config)")
    if not tracking_uri.startswith(("http://", "https://")):
        raise SweepError(f"--cluster: workers log to one MLflow server, but the tracking URI is {tracking_uri}; "
                         "set MLFLOW_TRACKING_URI=http://HOST:PORT (a running `mlflow server`)")
    if address.startswith("tls://") and tls is None:
        raise SweepError(f"--cluster {address}: a TLS scheduler needs --tls-ca-file, --tls-cert and --tls-key")
    return Cluster(address, remote, url.stdout.strip(), commit, tracking_uri, dict(resources), tls)


def parse_resources(text: str | None) -> dict[str, float]:
    """``GPU=1,MEM=2`` -> ``{"GPU": 1.0, "MEM": 2.0}``."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if item.strip():
            name, _, amount = item.partition("=")
            try:
                out[name.strip()] = float(amount)
            except ValueError:
                raise SweepError(f"--resources: {item.strip()!r} is not NAME=AMOUNT") from None
    return out


def worker_checkout(cluster: Cluster) -> Path:
    """This worker's clone of the repository at the sweep's commit (cloned on first use; one
    checkout at a time per clone)."""
    workdir = Path(os.environ.get(WORKDIR_ENV) or Path(tempfile.gettempdir()) / f"dml-worker-{os.getpid()}")
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{workdir}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (workdir / ".git").exists():
            cloned = subprocess.run(["git", "clone", "-q", cluster.git_url, str(workdir)], capture_output=True, text=True)
            if cloned.returncode != 0:
                raise RuntimeError(f"git clone {cluster.git_url} failed: {cloned.stderr.strip()[-300:]}")
        for args in (("fetch", "-q", "origin"), ("checkout", "-q", "--detach", "--force", cluster.commit)):
            done = _git(workdir, *args)
            if done.returncode != 0:
                raise RuntimeError(f"git {' '.join(args)} in {workdir} failed: {done.stderr.strip()[-300:]}")
    return workdir


def run_on_worker(cluster: Cluster, name: str, set_args: list[str], env: dict[str, str], logger) -> tuple[float, str, list[str], int]:
    """One experiment in this worker's clone, pushed to the remotes; returns (seconds, where it
    ran, the output lines, the exit code of the first step that failed or 0)."""
    started = time.perf_counter()
    workdir = worker_checkout(cluster)
    where = f"{socket.gethostname()}:{workdir}"
    env = {**env, "MLFLOW_TRACKING_URI": cluster.tracking_uri}
    lines: list[str] = []
    for step in (("exp", "run", "--temp", "--pull", "-n", name, *set_args),
                 ("exp", "push", "--force", "--run-cache", "origin", name)):
        result = stream(dvc_command(*step), str(workdir), logger, f"[{name}] ", env)
        lines += result.lines
        if result.returncode != 0:
            return time.perf_counter() - started, where, lines, result.returncode
    return time.perf_counter() - started, where, lines, 0


def remote_experiments(root: Path | str, cluster: Cluster) -> list[str]:
    """The names of the sweep commit's experiments on the git remote."""
    listed = subprocess.run(dvc_command("exp", "list", "--name-only", cluster.remote), cwd=root, capture_output=True, text=True)
    return listed.stdout.split() if listed.returncode == 0 else []


def pull(root: Path | str, cluster: Cluster, names: list[str], logger) -> bool:
    """Bring finished experiments (refs and outputs) into the coordinator's repository."""
    if not names:
        return True
    return stream(dvc_command("exp", "pull", "--force", cluster.remote, *names), str(root), logger, "[exp pull] ").returncode == 0


def close_abandoned(cluster: Cluster, experiment: str, sweep: str) -> list[str]:
    """MLflow runs of this sweep's experiments left RUNNING by an attempt whose worker died,
    where another attempt of the same experiment FINISHED: marked KILLED (their outboxes died
    with the worker). Returns their run ids."""
    import mlflow

    client = mlflow.MlflowClient(cluster.tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`dml.sweep` = '{sweep}'", max_results=10000)
    finished = {run.data.tags.get("dvc.exp_name") for run in runs if run.info.status == "FINISHED"}
    closed = [run.info.run_id for run in runs if run.info.status == "RUNNING" and run.data.tags.get("dvc.exp_name") in finished]
    for run_id in closed:
        client.set_terminated(run_id, "KILLED")
    return closed


def task_runner(cluster: Cluster):
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=cluster.address, client_kwargs={"security": security(cluster.tls)} if cluster.tls else None)


def security(tls: tuple[str, str, str]):
    """distributed's TLS settings of a client: the CA that signed the cluster's certificates and
    this client's own certificate and key; unencrypted connections are refused."""
    from distributed import Security

    ca, cert, key = tls
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def annotate(cluster: Cluster):
    """The Dask annotation an experiment task is submitted under (its resources)."""
    if not cluster.resources:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources=cluster.resources)
