"""The README's sampler table over seeds: mean +- std (ddof=1) of each sampler's stored
``objective_zoo.py`` results (margin loss, 15 epochs).

Seed 0 is ``benchmarks/results/sampler-<name>/margin.json`` (``class_balanced``, the default, is
``results/zoo/margin.json``), seed k is ``results/sampler-<name>-s<k>/margin.json``, produced by
``python benchmarks/objective_zoo.py --losses margin --set sampler.name=<name> --set train.seed=<k>
--tag sampler-<name>-s<k>``. Usage: ``python benchmarks/sampler_table.py``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ["random", "class_balanced", "class_random", "full_random", "greedy_coreset", "d2_coreset", "ddm", "frd"]
COLUMNS = ["recall_at_1", "nmi", "map_at_r", "rho", "pi_ratio"]


def runs(sampler: str) -> dict[int, dict]:
    first = RESULTS / ("zoo" if sampler == "class_balanced" else f"sampler-{sampler}") / "margin.json"
    found = {0: json.loads(first.read_text())} if first.is_file() else {}
    for path in sorted(RESULTS.glob(f"sampler-{sampler}-s*/margin.json")):
        found[int(path.parent.name.rsplit("-s", 1)[1])] = json.loads(path.read_text())
    return found


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    print("| `sampler.name` | seeds | R@1 | NMI | MAP@R | rho | pi_ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for sampler in SAMPLERS:
        found = runs(sampler)
        if not found:
            continue
        seeds = ",".join(str(s) for s in sorted(found))
        print(f"| `{sampler}` | {seeds} | " + " | ".join(cell([found[s][c] for s in sorted(found)]) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
