"""Prefect flow over the DVC pipeline: one Prefect task per stage of ``dvc.yaml``.

The DAG is read from ``dvc.yaml`` through DVC's own graph, never declared again here. Each task
runs ``dvc --wait-for-lock repro --single-item <stage>`` once its upstream tasks are done, so DVC
alone decides whether the stage is changed (and runs it) or is skipped; stages whose upstream
tasks are done run concurrently. DVC releases its repository lock while a stage command runs,
so concurrent stages really overlap; ``--wait-for-lock`` serialises only the short
check/commit phases. Works offline with no Prefect server configured (ephemeral API, set up in
``pipelines/__init__.py``); each stage's output is streamed into the task's log as it is printed.

Usage: ``python -m pipelines.dvc_flow [--root .] [--stage report] [--list]``.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import networkx as nx
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from pipelines._process import dvc_command, stream


def stage_dag(root: Path | str, target: str | None = None) -> dict[str, list[str]]:
    """``{stage: [upstream stages]}`` of dvc.yaml, upstream first; with ``target``, only that
    stage and its ancestors."""
    from dvc.repo import Repo

    # Stage addresses ("train", "sub/dvc.yaml:train") are relative to the cwd: resolve them
    # from the root, where the tasks run `dvc repro`.
    with contextlib.chdir(root), Repo(".") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        names = {stage: stage.addressing for stage in graph.nodes}
        if target is not None:
            matches = [stage for stage, name in names.items() if name == target]
            if not matches:
                raise ValueError(f"--stage: no stage named {target!r} in dvc.yaml; stages: {sorted(names.values())}")
            graph = graph.subgraph({matches[0], *nx.descendants(graph, matches[0])})
        return {
            names[stage]: sorted(names[upstream] for upstream in graph.successors(stage))
            for stage in reversed(list(nx.topological_sort(graph)))
        }


@task(cache_policy=NO_CACHE, task_run_name="dvc:{stage}", retries=1, retry_delay_seconds=2)
def repro_stage(root: str, stage: str) -> bool:
    """Reproduce one stage if DVC finds it changed; returns whether it ran."""
    result = stream(dvc_command("repro", "--single-item", stage), root, get_run_logger())
    if result.returncode != 0:
        raise RuntimeError(f"dvc repro {stage} failed with exit code {result.returncode}")
    return f"Running stage '{stage}'" in result.output


@flow(name="dvc-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=4))
def dvc_pipeline(root: str = ".", stage: str | None = None) -> dict[str, bool]:
    """Run the DVC pipeline (or ``stage`` and its ancestors); returns ``{stage: ran}``."""
    root = str(Path(root).resolve())
    futures = {}
    for name, upstream in stage_dag(root, stage).items():
        futures[name] = repro_stage.submit(root, name, wait_for=[futures[u] for u in upstream])
    return {name: future.result() for name, future in futures.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.dvc_flow", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    parser.add_argument("--stage", default=None, help="run only this stage and its ancestors")
    parser.add_argument("--list", action="store_true", help="list the stages (upstream first) and exit")
    args = parser.parse_args(argv)
    # The DAG (and a bad --stage) is read before the flow starts Prefect's temporary server.
    try:
        dag = stage_dag(args.root, args.stage)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.list:
        print("\n".join(f"{name}" + (f" <- {', '.join(upstream)}" if upstream else "") for name, upstream in dag.items()))
        return
    ran = dvc_pipeline(args.root, args.stage)
    print("ran: " + (", ".join(name for name, did in ran.items() if did) or "nothing (all stages up to date)"))


if __name__ == "__main__":
    main()
