"""Run a study (``sweeps/*.yaml``) as DVC experiments, orchestrated by Prefect.

Every variant x seed is one ``dvc exp run --temp -n <sweep>-<variant>-s<seed> -S key=value ...``:
DVC runs it in a temporary copy of the repository (the workspace and its params.yaml stay
untouched), reruns only the stages its params change, and keeps the result as an experiment of
the current commit (``dvc exp show``). The whole sweep is validated first (see
:mod:`dml.studies.sweep`); a run whose experiment already exists with the same name *and* the
same params is skipped, so rerunning an interrupted sweep runs only what is missing. At most
``concurrency`` experiments run at a time (Prefect's thread pool; DVC's repository lock, waited
for, serialises only their short setup and commit phases). A failing experiment is reported
without stopping the others; only transient failures (a lock, a process killed by a signal) are
retried. Each experiment's output is streamed live into the Prefect log, prefixed by its name.

At the end the sweep's table and figures are written to ``reports/<sweep>/`` (see
:mod:`dml.studies.aggregate`) and logged to the sweep's MLflow run, under which the experiments'
runs are nested (tags ``dml.sweep``, ``dml.variant``).

Usage::

    python -m pipelines.sweep sweeps/rho.yaml           # run what is missing, then report
    python -m pipelines.sweep --check sweeps/rho.yaml   # validate, list what would run
    python -m pipelines.sweep --show sweeps/rho.yaml    # per run: what varies and the key numbers
    python -m pipelines.sweep --report sweeps/rho.yaml  # rewrite reports/<sweep>/ only
    # the same sweep under a condition, as its own study (experiments rho-script-*, reports/rho-script/)
    python -m pipelines.sweep sweeps/rho.yaml --set data.glyphs.split_by=script --name rho-script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from dml.config import parse_params
from dml.studies.aggregate import aggregate, show_table
from dml.studies.experiments import Experiment, ExperimentsError, list_experiments
from dml.studies.sweep import Plan, Progress, SweepError, parse_assignment, plan
from dml.tracking import SWEEP_BASE_ENV, SWEEP_ENV, SWEEP_RUN_ENV, VARIANT_ENV, Tracker, source_commit, tracking_uri
from pipelines._process import dvc_command, stream
from pipelines.cluster import Cluster, annotate, close_abandoned, parse_resources, prepare, pull, remote_experiments, run_on_worker, task_runner

# Failures worth another try: DVC or git finding their lock taken, SQLite busy, a process killed
# by a signal (negative exit code). Anything else, a stage's params or data error above all, fails
# the same way every time and is not retried.
TRANSIENT_MARKERS = ("Unable to acquire lock", "index.lock", "database is locked")


class ExperimentFailed(RuntimeError):
    """An experiment failed for a reason that a retry would not change (one line)."""


class TransientFailure(RuntimeError):
    """An experiment failed for a reason that may pass (one line)."""


def _is_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry only :class:`TransientFailure`."""
    try:
        return isinstance(state.result(raise_on_failure=False), TransientFailure)
    except Exception:  # noqa: BLE001 - no readable result: not known to be transient
        return False


def _reason(lines: list[str]) -> str:
    """The line that says why: a stage's one-line error, else DVC's ERROR line, else the last."""
    for marker in ("error in stage", "ERROR:"):
        found = [line for line in lines if line.lstrip().startswith(marker)]
        if found:
            return found[-1].strip()
    return lines[-1].strip() if lines else "no output"


def _failure(code: int, lines: list[str], what: str) -> ExperimentFailed | TransientFailure:
    """The error of a failed DVC command: transient (retried) when killed by a signal or when its
    output shows a taken lock, else final; one line, ``what`` and the reason."""
    transient = code < 0 or any(m in line for line in lines for m in TRANSIENT_MARKERS)
    return (TransientFailure if transient else ExperimentFailed)(f"{what}: {_reason(lines)}")


@task(cache_policy=NO_CACHE, task_run_name="exp:{name}", retries=2, retry_delay_seconds=10, retry_condition_fn=_is_transient)
def run_experiment(root: str, name: str, set_args: list[str], env: dict[str, str]) -> float:
    """One ``dvc exp run --temp``; returns its wall seconds."""
    started = time.perf_counter()
    result = stream(dvc_command("exp", "run", "--temp", "-n", name, *set_args), root, get_run_logger(), f"[{name}] ", env)
    if result.returncode != 0:
        raise _failure(result.returncode, result.lines, f"dvc exp run exited {result.returncode}")
    return time.perf_counter() - started


@task(cache_policy=NO_CACHE, task_run_name="exp:{name}", retries=2, retry_delay_seconds=10, retry_condition_fn=_is_transient)
def run_cluster_experiment(cluster: Cluster, name: str, set_args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """One experiment on a Dask worker, in its clone, pushed to the remotes (pipelines/cluster.py);
    returns its wall seconds and where it ran."""
    seconds, where, lines, code = run_on_worker(cluster, name, set_args, env, get_run_logger())
    if code != 0:
        raise _failure(code, lines, f"dvc exited {code} on {where}")
    return seconds, where


@dataclass(frozen=True)
class Todo:
    """What a sweep has left to do against the experiments that exist."""

    done: list[str]  # same name, same params: skipped
    stale: list[str]  # same name, other params (the sweep or params.yaml changed): replaced
    to_run: list[str]  # the stale and the missing ones, in the sweep's order


def todo(sweep: Plan, experiments: dict[str, Experiment]) -> Todo:
    done, stale, to_run = [], [], []
    for run in sweep.runs:
        exp = experiments.get(run.exp_name)
        if exp is not None and exp.params == sweep.params[run.exp_name]:
            done.append(run.exp_name)
            continue
        if exp is not None:
            stale.append(run.exp_name)
        to_run.append(run.exp_name)
    return Todo(done, stale, to_run)


def parent_run(sweep: Plan) -> Tracker:
    """The sweep's own MLflow run (reopened by a rerun of the sweep on the same commit): the
    sweep's definition as params, its report as artifacts, its experiments' runs nested under it."""
    first = parse_params(sweep.params[sweep.runs[0].exp_name])
    commit = source_commit()
    spec = sweep.spec
    head = {
        "name": f"sweep {spec.name}",
        "tags": {"dml.sweep": spec.name, "dml.role": "sweep", "mlflow.source.git.commit": commit,
                 "mlflow.source.name": "pipelines.sweep", "mlflow.source.type": "LOCAL"},
        "params": {"sweep.file": sweep.path.as_posix(), "sweep.variants": ",".join(sweep.variants),
                   "sweep.seeds": ",".join(map(str, spec.seeds)), "sweep.concurrency": str(spec.concurrency),
                   **{f"sweep.base.{k}": str(v) for k, v in spec.base.items()}},
    }
    return Tracker(first, f"sweep-{spec.name}-{commit[:12]}", head=head)


@flow(name="dvc-sweep", validate_parameters=False)
def sweep_flow(sweep_file: str, overrides: dict | None = None, name: str | None = None, concurrency: int | None = None,
               only: list[str] | None = None, cluster: Cluster | None = None) -> dict[str, str]:
    """Run the sweep's missing experiments (here, or on the Dask ``cluster``), then write and log
    its report; returns ``{experiment: "skipped" | "ran in N s" | "failed: why"}``."""
    logger = get_run_logger()
    root = os.getcwd()
    sweep = plan(sweep_file, overrides=overrides, name=name, concurrency=concurrency, only=only)
    if cluster is not None:  # what finished on the cluster before (a rerun of the sweep) counts as done
        pull(root, cluster, sorted(set(remote_experiments(root, cluster)) & set(sweep.params)), logger)
    state = todo(sweep, list_experiments(root))
    logger.info(f"sweep {sweep.spec.name}: {len(sweep.runs)} runs, {len(state.done)} done (skipped), "
                f"{len(state.to_run)} to run, at most {sweep.spec.concurrency} at a time")
    if state.stale:
        logger.info(f"replacing experiments run with other params: {', '.join(state.stale)}")
        removed = stream(dvc_command("exp", "remove", *state.stale), root, logger, "[exp remove] ")
        if removed.returncode != 0:  # each of them then fails on its name, and says so
            logger.error(f"dvc exp remove failed (exit {removed.returncode}): {_reason(removed.lines)}")
    parent = parent_run(sweep)
    parent.set_status("RUNNING")
    parent.log_artifact(sweep.path, "sweep")
    parent.sync()
    by_name = {run.exp_name: run for run in sweep.runs}
    outcome = {name: "skipped (done)" for name in state.done}
    try:
        futures = {}
        for name in state.to_run:
            env = {SWEEP_ENV: sweep.spec.name, VARIANT_ENV: by_name[name].variant, SWEEP_RUN_ENV: parent.key,
                   SWEEP_BASE_ENV: json.dumps(sweep.spec.base)}
            if cluster is None:
                futures[name] = run_experiment.submit(root, name, sweep.set_args[name], env)
            else:
                with annotate(cluster):
                    futures[name] = run_cluster_experiment.submit(cluster, name, sweep.set_args[name], env)
        for name, future in futures.items():
            future.wait()
            if future.state.is_completed() and cluster is None:
                outcome[name] = f"ran in {future.result():.1f} s"
            elif future.state.is_completed():
                seconds, where = future.result()
                pulled = pull(root, cluster, [name], logger)
                outcome[name] = f"ran in {seconds:.1f} s on {where}" if pulled else f"failed: dvc exp pull of {name} failed"
            else:
                error = future.state.result(raise_on_failure=False)
                outcome[name] = f"failed: {error}"
                logger.error(f"{name} failed: {error}")
    except BaseException:  # interrupted: the sweep's run says so (a rerun reopens it)
        parent.set_status("KILLED")
        parent.sync()
        raise
    if cluster is not None:
        first = parse_params(sweep.params[sweep.runs[0].exp_name])
        for run_id in close_abandoned(cluster, first.tracking.experiment, sweep.spec.name):
            logger.info(f"MLflow run {run_id}: an attempt on a worker that died, marked KILLED (another attempt finished)")
    runs, _, files = aggregate(sweep, list_experiments(root), root)
    for path in files:
        parent.log_artifact(path, "report")
    failed = any(text.startswith("failed") for text in outcome.values())
    parent.set_status("FAILED" if failed else "FINISHED")
    parent.sync()
    logger.info(f"report of {len(runs)} runs in {files[0].parent}")
    return {run.exp_name: outcome[run.exp_name] for run in sweep.runs}


def progress_lines(every_s: float = 5.0) -> Progress:
    """Print "checked N of M runs" to stderr at most every ``every_s`` seconds: checking a large
    sweep takes a while, and it says so rather than sit silent."""
    last = time.monotonic()

    def report(done: int, total: int) -> None:
        nonlocal last
        if done < total and time.monotonic() - last >= every_s:
            print(f"checked {done:,} of {total:,} runs ...", file=sys.stderr, flush=True)
            last = time.monotonic()

    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="sweep file, e.g. sweeps/rho.yaml (relative to --root)")
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate the sweep and list what would run")
    mode.add_argument("--show", action="store_true", help="per run: what varies, the key numbers, its state")
    mode.add_argument("--report", action="store_true", help="write reports/<sweep>/ from the experiments only")
    parser.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of every run (added to the sweep's base); with --name, a condition of the study")
    parser.add_argument("--name", help="the sweep's name for this condition (experiments <name>-<variant>-s<seed>, reports/<name>/)")
    parser.add_argument("--concurrency", type=int, help="experiments at a time (default: the file's concurrency)")
    parser.add_argument("--only", help="comma-separated variants to run and report, a subset of the file's (same experiment names)")
    parser.add_argument("--cluster", metavar="ADDRESS", help="run the experiments on this Dask scheduler's workers (tcp://HOST:PORT; "
                        "pipelines/cluster.py): a committed workspace, its commit on the git remote, a default DVC remote")
    parser.add_argument("--git-remote", default="origin", help="with --cluster: the git remote workers clone and push to (default: origin)")
    parser.add_argument("--resources", metavar="NAME=N[,...]", help="with --cluster: what one experiment takes of a worker's declared "
                        "resources, e.g. GPU=1")
    parser.add_argument("--tls-ca-file", help="with a tls:// --cluster: the CA certificate (PEM) of the cluster")
    parser.add_argument("--tls-cert", help="with a tls:// --cluster: this client's certificate (PEM)")
    parser.add_argument("--tls-key", help="with a tls:// --cluster: this client's private key (PEM)")
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    os.chdir(args.root)
    try:
        overrides = dict(parse_assignment(text) for text in args.set)
        only = [v.strip() for v in args.only.split(",") if v.strip()] if args.only else None
        sweep = plan(args.sweep, overrides=overrides, name=args.name, concurrency=args.concurrency, only=only,
                     progress=progress_lines())  # before anything runs, and before Prefect starts
        if args.check or args.show or args.report:
            experiments = list_experiments(".")
    except (SweepError, ExperimentsError) as err:
        print(str(err), file=sys.stderr)
        raise SystemExit(1) from None
    if args.check:
        state = todo(sweep, experiments)
        for run in sweep.runs:
            mark = "done" if run.exp_name in state.done else "rerun (params changed)" if run.exp_name in state.stale else "to run"
            print(f"{run.exp_name}\t{mark}\tdvc exp run --temp -n {run.exp_name} {' '.join(sweep.set_args[run.exp_name])}")
        return
    if args.show:
        print(show_table(sweep, experiments, ".").to_string(index=False, na_rep="-"))
        return
    if args.report:
        runs, _, files = aggregate(sweep, experiments, ".")
        print(f"{len(runs)} runs -> {', '.join(str(f) for f in files)}")
        return
    cluster = None
    if args.cluster:
        try:
            uri = tracking_uri(parse_params(sweep.params[sweep.runs[0].exp_name]).tracking)
            tls = (args.tls_ca_file, args.tls_cert, args.tls_key) if args.tls_ca_file or args.tls_cert or args.tls_key else None
            if tls is not None and not all(tls):
                raise SweepError("--cluster: TLS needs all three of --tls-ca-file, --tls-cert and --tls-key")
            cluster = prepare(".", args.cluster, args.git_remote, uri, parse_resources(args.resources), tls)
        except SweepError as err:
            print(str(err), file=sys.stderr)
            raise SystemExit(1) from None
    started = time.perf_counter()
    runner = ThreadPoolTaskRunner(max_workers=sweep.spec.concurrency) if cluster is None else task_runner(cluster)
    try:
        outcome = sweep_flow.with_options(task_runner=runner)(args.sweep, overrides, args.name, args.concurrency, only, cluster)
    except (SweepError, ExperimentsError) as err:  # the repository changed under the sweep, say
        print(str(err), file=sys.stderr)
        raise SystemExit(1) from None
    for name, text in outcome.items():
        print(f"{name}: {text}")
    failed = [name for name, text in outcome.items() if text.startswith("failed")]
    print(f"sweep {sweep.spec.name}: {len(outcome) - len(failed)} of {len(outcome)} runs done, "
          f"{len(failed)} failed; {time.perf_counter() - started:.1f} s; report in reports/{sweep.spec.name}/")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
