"""The result tables of ``docs/``, generated from their committed sources, so that no published
number is typed twice.

Each table sits in a docs file between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``;
``python -m pipelines.docs_tables`` rewrites every such region from its source, ``--check`` only
says which differ (exit 1), which ``tests/test_docs.py`` runs. Sources:

- ``rho-study``: ``reports/rho-<split>-<regime>[-<loss>]/table.csv`` and ``effects.csv`` (the sweep reports);
- ``objective-zoo``: ``reports/objectives/table.csv`` (the sweep ``sweeps/objectives.yaml``: every
  loss, 3 seeds), with each loss's default miner from the schema;
- ``objective-correlations``: ``reports/objectives/correlations.json`` (Spearman over the per-loss means);
- ``objective-cost``: ``benchmarks/results/objective_share.txt`` (``benchmarks/objective_share.py``);
- ``samplers``: ``benchmarks/results/sampler-<name>[-s<seed>]/margin.json`` (seed 0 of
  ``class_balanced`` is the zoo's margin run).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from dml.losses.config import LossSection
from dml.studies.tables import cell

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
OBJECTIVES = ROOT / "reports" / "objectives"
REGION = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)

MARGIN = "margin (beta 1.2)"  # the rho study's loss: the default margin loss
RHO_CONDITIONS = [("random", "scratch", MARGIN, "rho-random-scratch"), ("random", "fine-tuned", MARGIN, "rho-random-ft"),
                  ("shifted (script)", "scratch", MARGIN, "rho-script-scratch"),
                  ("shifted (script)", "fine-tuned", MARGIN, "rho-script-ft"),
                  ("shifted (script)", "fine-tuned", "margin (beta 0.6)", "rho-script-ft-beta0.6"),
                  ("shifted (script)", "fine-tuned", "contrastive", "rho-script-ft-contrastive"),
                  ("shifted (script)", "fine-tuned", "triplet", "rho-script-ft-triplet")]
SAMPLERS = ["random", "class_balanced", "class_random", "full_random", "greedy_coreset", "d2_coreset", "ddm", "frd"]
METRICS = ["recall_at_1", "nmi", "map_at_r", "rho", "pi_ratio"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _mean_std(row: dict[str, str], column: str, signed: bool = False) -> str:
    """A report CSV's ``<column>_mean`` / ``_std`` cells (std blank for one seed) as the report's markdown shows them."""
    return cell(float(row[f"{column}_mean"]), float(row.get(f"{column}_std") or "nan"), signed)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def rho_study() -> str:
    """Per condition and variant: mean ± std over seeds, and the paired Δ R@1 against `distance`."""
    rows = []
    for split, regime, loss, folder in RHO_CONDITIONS:
        report = ROOT / "reports" / folder
        deltas = {row["variant"]: row for row in _rows(report / "effects.csv")}
        for row in _rows(report / "table.csv"):
            effect = deltas.get(row["variant"])
            delta = _mean_std({k.replace("_delta", ""): v for k, v in effect.items()}, "recall_at_1", signed=True) if effect else "baseline"
            rows.append([split, regime, loss, f"`{row['variant']}`", row["n"],
                         *(_mean_std(row, c) for c in ("recall_at_1", "map_at_r", "nmi", "rho_train_skip1", "pi_ratio")), delta])
    return _markdown(["split", "regime", "loss", "variant", "n", "R@1", "MAP@R", "NMI", "rho (train, skip 1)", "pi_ratio",
                      "Δ R@1 vs distance (paired)"], rows)


def objective_zoo() -> str:
    """Per loss of the objectives sweep: mean ± std over its seeds, with the miner ``auto`` chose."""
    rows = []
    for row in _rows(OBJECTIVES / "table.csv"):
        miner = LossSection(name=row["variant"]).knobs.default_miner
        rows.append([f"`{row['variant']}`", f"`{miner}`", row["n"],
                     *(_mean_std(row, c) for c in ("recall_at_1", "map_at_r", "nmi", "rho_train_skip1", "rho_test", "pi_ratio"))])
    return _markdown(["loss", "miner", "n", "R@1", "MAP@R", "NMI", "rho (train, skip 1)", "rho (test)", "pi_ratio"], rows)


CORRELATED = [("recall_at_1", "R@1"), ("nmi", "NMI"), ("pi_ratio", "pi_ratio")]
RHOS = [("rho_train_skip1", "rho (train, skip 1): the paper's"), ("rho_test", "rho (test split)")]


def objective_correlations() -> str:
    """Spearman's rank correlation (p-value) of each per-loss mean with each rho's per-loss mean."""
    stats = json.loads((OBJECTIVES / "correlations.json").read_text())
    rows = []
    for y, name in CORRELATED:
        cells = []
        for x, _ in RHOS:
            found = stats[f"means:{y}~{x}"]
            cells.append(f"{found['spearman']:+.2f} (p = {found['p_value']:.2g}, n = {found['n']})")
        rows.append([f"{name} vs rho", *cells])
    return _markdown(["Spearman over the per-loss means", *(label for _, label in RHOS)], rows)


def objective_cost() -> str:
    """Seconds per training epoch and the loss + miner share of a step (objective_share.py)."""
    rows = []
    for line in (RESULTS / "objective_share.txt").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows.append([cells[0], cells[5], cells[4]])
    return _markdown(["loss", "s/epoch", "loss+miner share of a step"], rows)


def sampler_runs(sampler: str) -> dict[int, dict]:
    """{seed: objective_zoo.py result} of one sampler (margin loss)."""
    first = RESULTS / ("zoo" if sampler == "class_balanced" else f"sampler-{sampler}") / "margin.json"
    found = {0: json.loads(first.read_text())} if first.is_file() else {}
    for path in sorted(RESULTS.glob(f"sampler-{sampler}-s*/margin.json")):
        found[int(path.parent.name.rsplit("-s", 1)[1])] = json.loads(path.read_text())
    return found


def samplers() -> str:
    """Per sampler: mean ± std (ddof 1) over its seeds."""
    rows = []
    for sampler in SAMPLERS:
        found = sampler_runs(sampler)
        if found:
            seeds = sorted(found)
            columns = [[found[s][column] for s in seeds] for column in METRICS]
            cells = [cell(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan) for values in columns]
            rows.append([f"`{sampler}`", ",".join(map(str, seeds)), *cells])
    return _markdown(["`sampler.name`", "seeds", "R@1", "NMI", "MAP@R", "rho", "pi_ratio"], rows)


TABLES: dict[str, Callable[[], str]] = {"rho-study": rho_study, "objective-zoo": objective_zoo,
                                        "objective-correlations": objective_correlations,
                                        "objective-cost": objective_cost, "samplers": samplers}


def regenerate(text: str, where: str) -> str:
    """``text`` with every generated region rewritten from its source."""
    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"{where}: unknown generated table {name!r}; known: {sorted(TABLES)}")
        return match.group(1) + TABLES[name]() + match.group(4)
    return REGION.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.docs_tables", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the files whose tables differ from their sources (exit 1)")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        fresh = regenerate(text, str(path.relative_to(ROOT)))
        if fresh != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(fresh)
    for path in stale:
        print(f"{path}: {'tables differ from their sources (run python -m pipelines.docs_tables)' if args.check else 'tables rewritten'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
