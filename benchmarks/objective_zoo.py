"""The README's zoo table: every loss with its default miner, trained with the default schedule
on the default glyph data, one seed, evaluated as the pipeline does (embed -> evaluate ->
spectrum on the unseen test classes).

Runs the library functions the stages call (``train``, ``embed_source``,
``evaluate_embeddings``, ``spectral_decay``/``embedding_density``) in one process per loss, so a
loss that crashes does not take the table with it. Each finished loss is stored as
``benchmarks/results/zoo/<loss>.json``; a rerun skips what is stored (``--force`` redoes it).
Needs the preprocessed data: run ``dvc repro preprocess`` first.

Usage: ``python benchmarks/objective_zoo.py [--losses arcface proxynca] [--set loss.arcface.scale=30]
[--epochs 15] [--force]``; prints and writes ``benchmarks/results/objective_zoo.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dml.config import Params, parse_params  # noqa: E402
from dml.losses.config import LossSection  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COLUMNS = ["recall_at_1", "nmi", "map_at_r", "rho", "pi_ratio", "seconds_per_epoch"]


def loss_names() -> list[str]:
    return [name for name in LossSection.model_fields if name != "name"]


def _set(raw: dict, dotted: str, value: object) -> None:
    *path, key = dotted.split(".")
    for part in path:
        raw = raw.setdefault(part, {})
    raw[key] = value


def params_for(loss: str, overrides: list[str], epochs: int | None) -> Params:
    """params.yaml with ``loss.name`` set, ``miner.name`` / ``model.normalize`` on auto (the loss's
    defaults), and ``--set key=value`` overrides (values parsed as YAML)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    _set(raw, "loss.name", loss)
    _set(raw, "miner.name", "auto")
    _set(raw, "model.normalize", "auto")
    _set(raw, "train.track_test_recall", False)
    if epochs is not None:
        _set(raw, "train.epochs", epochs)
    for item in overrides:
        key, _, value = item.partition("=")
        _set(raw, key, yaml.safe_load(value))
    return parse_params(raw)


def run_one(params: Params) -> dict:
    """Train, embed the test split and score it exactly as the stages do."""
    import numpy as np

    from dml.data.loading import load_split
    from dml.data.stats import load_stats
    from dml.evaluation import evaluate_embeddings
    from dml.metrics.embedding_space import embedding_density, spectral_decay
    from dml.paths import PREPROCESSED
    from dml.training.monitoring import embed_pass
    from dml.training.metric import train

    stats = load_stats(ROOT / PREPROCESSED)
    train_split = load_split(ROOT / PREPROCESSED, "train")
    test = load_split(ROOT / PREPROCESSED, "test")
    started = time.perf_counter()
    result = train(params, train_split, stats, progress=False)
    seconds = time.perf_counter() - started
    vectors = embed_pass(result.model, test, params)
    metrics = evaluate_embeddings(vectors, test.labels, cfg=params.eval).metrics
    density = embedding_density(vectors, test.labels)
    losses = [record.loss for record in result.curve]
    return {
        "loss": params.loss.name,
        "miner": params.miner.name,
        "normalized": params.model.normalize,
        "training_config": params.training_config(),
        "recall_at_1": metrics["recall_at_1"],
        "nmi": metrics["nmi"],
        "map_at_r": metrics["map_at_r"],
        "rho": spectral_decay(vectors, 0),
        "pi_ratio": density["pi_ratio"],
        "seconds_per_epoch": float(np.mean([record.seconds for record in result.curve])),
        "train_seconds": seconds,
        "first_epoch_loss": losses[0],
        "last_epoch_loss": losses[-1],
        "finite": bool(np.isfinite(vectors).all()),
    }


def untrained_recall_at_1(params: Params) -> float:
    """R@1 of the network as initialised (seeded as training seeds it), for scale."""
    from dml.data.loading import load_split
    from dml.data.stats import load_stats
    from dml.evaluation import evaluate_embeddings
    from dml.paths import PREPROCESSED
    from dml.training.metric import build_training
    from dml.training.monitoring import embed_pass

    stats = load_stats(ROOT / PREPROCESSED)
    setup = build_training(params, load_split(ROOT / PREPROCESSED, "train"), stats)
    test = load_split(ROOT / PREPROCESSED, "test")
    vectors = embed_pass(setup.model, test, params)
    return evaluate_embeddings(vectors, test.labels, cfg=params.eval.model_copy(update={"clustering": False})).metrics["recall_at_1"]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| loss | miner | R@1 | NMI | MAP@R | rho | pi_ratio | s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['loss']}` | `{r['miner']}` | {r['recall_at_1']:.3f} | {r['nmi']:.3f} | {r['map_at_r']:.3f} | "
            f"{r['rho']:.3f} | {r['pi_ratio']:.3f} | {r['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="*", default=None, help="default: all 15")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override key=value")
    parser.add_argument("--epochs", type=int, default=None, help="default: train.epochs of params.yaml")
    parser.add_argument("--force", action="store_true", help="rerun losses that have a stored result")
    parser.add_argument("--tag", default="zoo", help="results folder name under benchmarks/results/")
    parser.add_argument("--untrained", action="store_true", help="only print the untrained network's R@1")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: run one loss, print JSON
    args = parser.parse_args()

    if args.untrained:
        print(f"untrained small_cnn (normalised): R@1 {untrained_recall_at_1(params_for('margin', [], 1)):.3f}")
        return
    if args.one:
        print(json.dumps(run_one(params_for(args.one, args.overrides, args.epochs))))
        return

    folder = RESULTS / args.tag
    folder.mkdir(parents=True, exist_ok=True)
    names = args.losses or loss_names()
    for name in names:
        params_for(name, args.overrides, args.epochs)  # every config is validated before anything runs
    for name in names:
        out = folder / f"{name}.json"
        if out.is_file() and not args.force:
            continue
        cmd = [sys.executable, __file__, "--one", name, *sum((["--set", o] for o in args.overrides), [])]
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs)]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{name}: FAILED\n{proc.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        out.write_text(json.dumps(row, indent=2) + "\n")
        print(f"{name:16s} R@1 {row['recall_at_1']:.3f}  ({time.perf_counter() - started:.0f} s)", flush=True)
    rows = [json.loads((folder / f"{n}.json").read_text()) for n in loss_names() if (folder / f"{n}.json").is_file()]
    table = markdown(rows)
    (RESULTS / f"objective_{args.tag}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
