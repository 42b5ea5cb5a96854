"""A sweep's numbers, read from its DVC experiments: per-run values, per-variant mean +- sample
std over seeds, paired effects against the baseline variant, their Markdown, and rank correlations.

Per run (``runs.csv``): every ``recall_at_k`` of metrics/eval.json, ``nmi``, ``map_at_r``;
``rho_<split>`` and ``pi_ratio`` of metrics/spectrum.json (the embeddings of ``spectrum.split``,
test by default); ``rho_train_skip1``, the paper's rho (training-split sample, largest singular
value dropped), the last value training recorded in metrics/train_curve.csv. Per variant
(``table.csv``, ``table.md``): mean and sample std (ddof=1; blank for one seed) of each, and n,
the seeds found. Effects (``effects.csv``, ``effects.md``): every variant against the first one,
the sweep's baseline, paired by seed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from dml.paths import EVAL_METRICS, SPECTRUM_METRICS
from dml.studies.experiments import Experiment
from dml.studies.sweep import Plan

ID_COLUMNS = ["exp", "variant", "seed"]
TRAIN_RHO = "rho_train_skip1"
CURVE_COLUMN = "train_rho_skip1"  # metrics/train_curve.csv's column of the paper's rho
LABELS = {"nmi": "NMI", "map_at_r": "MAP@R", "pi_ratio": "pi_ratio", TRAIN_RHO: "rho (train, skip 1)"}


def label(column: str) -> str:
    if column.startswith("recall_at_"):
        return f"R@{column.removeprefix('recall_at_')}"
    if column.startswith("rho_") and column != TRAIN_RHO:
        return f"rho ({column.removeprefix('rho_')})"
    return LABELS.get(column, column)


def last_recorded(csv_text: str | None, column: str) -> float | None:
    """The last non-empty value of ``column`` in a CSV (None if never recorded)."""
    if not csv_text:
        return None
    frame = pd.read_csv(io.StringIO(csv_text))
    values = frame[column].dropna() if column in frame else ()
    return float(values.iloc[-1]) if len(values) else None


def run_values(exp: Experiment, curve_csv: str | None) -> dict[str, float]:
    """The tabulated numbers of one experiment (missing ones left out)."""
    evaluation = exp.metrics.get(EVAL_METRICS.as_posix(), {})
    spectrum = exp.metrics.get(SPECTRUM_METRICS.as_posix(), {})
    split = (exp.params.get("spectrum") or {}).get("split", "test")
    values = {key: evaluation[key] for key in sorted(evaluation, key=_recall_k) if key.startswith("recall_at_")}
    values |= {key: evaluation[key] for key in ("nmi", "map_at_r") if key in evaluation}
    if "rho" in spectrum:
        values[f"rho_{split}"] = spectrum["rho"]
    train_rho = last_recorded(curve_csv, CURVE_COLUMN)
    if train_rho is not None:
        values[TRAIN_RHO] = train_rho
    if "pi_ratio" in spectrum:
        values["pi_ratio"] = spectrum["pi_ratio"]
    return {key: float(value) for key, value in values.items() if isinstance(value, (int, float))}


def _recall_k(key: str) -> tuple[int, str]:
    suffix = key.removeprefix("recall_at_")
    return (int(suffix), key) if suffix.isdigit() else (0, key)


def collect_runs(plan: Plan, experiments: dict[str, Experiment],
                 read_curve: Callable[[Experiment], str | None]) -> pd.DataFrame:
    """One row per run of the plan that has a finished experiment *with the plan's params* (an
    experiment of the same name run from other params is not this sweep's result)."""
    rows = []
    for run in plan.runs:
        exp = experiments.get(run.exp_name)
        if exp is None or exp.params != plan.params[run.exp_name]:
            continue
        rows.append({"exp": run.exp_name, "variant": run.variant, "seed": run.seed, **run_values(exp, read_curve(exp))})
    frame = pd.DataFrame(rows, columns=ID_COLUMNS if not rows else None)
    frame = frame[ID_COLUMNS + sorted(metric_columns(frame), key=_column_rank)]
    return frame.sort_values(["variant", "seed"], key=_variant_order(plan)).reset_index(drop=True)


def _column_rank(column: str) -> tuple[int, int, str]:
    """Recall@k by k, then NMI, MAP@R, the spectrum's rho, the training rho, pi_ratio."""
    if column.startswith("recall_at_"):
        return (0, *_recall_k(column))
    group = 4 if column == TRAIN_RHO else 3 if column.startswith("rho_") else {"nmi": 1, "map_at_r": 2, "pi_ratio": 5}.get(column, 6)
    return (group, 0, column)


def _variant_order(plan: Plan) -> Callable[[pd.Series], pd.Series]:
    order = {name: i for i, name in enumerate(plan.variants)}
    return lambda col: col.map(order) if col.name == "variant" else col


def metric_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c not in ID_COLUMNS]


def summarize(runs: pd.DataFrame, variants: list[str] | None = None) -> pd.DataFrame:
    """Per variant: ``n`` (runs found), then ``<metric>_mean`` and ``<metric>_std`` (sample std,
    ddof=1: NaN for a single seed) of every metric; variants in ``variants`` order."""
    metrics = metric_columns(runs)
    groups = runs.groupby("variant", sort=False)
    table = pd.DataFrame({"n": groups.size()})
    for metric in metrics:
        table[f"{metric}_mean"] = groups[metric].mean()
        table[f"{metric}_std"] = groups[metric].std(ddof=1)
    if variants is not None:
        table = table.reindex([v for v in variants if v in table.index])
    table.index.name = "variant"
    return table


EFFECT_METRICS = ("recall_at_1", "map_at_r", "nmi", TRAIN_RHO, "pi_ratio")


def effects(runs: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Each variant against ``variants[0]`` (the baseline), paired by seed: for every metric of
    :data:`EFFECT_METRICS` the mean and sample std (ddof=1) over the shared seeds of
    ``variant - baseline``, and ``n``, the seeds both have. Pairing removes what a seed does to
    both (initialisation, batch order); an effect is worth reading only well outside its std."""
    metrics = [m for m in EFFECT_METRICS if m in runs.columns]
    columns = ["baseline", "n"] + [f"{m}_delta_{stat}" for m in metrics for stat in ("mean", "std")]
    rows = []
    if variants and not runs.empty:
        base = runs[runs["variant"] == variants[0]].set_index("seed")
        for variant in variants[1:]:
            other = runs[runs["variant"] == variant].set_index("seed")
            seeds = base.index.intersection(other.index)
            row: dict[str, Any] = {"variant": variant, "baseline": variants[0], "n": len(seeds)}
            for metric in metrics:
                delta = other.loc[seeds, metric] - base.loc[seeds, metric]
                row[f"{metric}_delta_mean"], row[f"{metric}_delta_std"] = delta.mean(), delta.std(ddof=1)
            rows.append(row)
    return pd.DataFrame(rows, columns=["variant", *columns]).set_index("variant")


def effects_markdown(table: pd.DataFrame, sweep: str) -> str:
    metrics = [c.removesuffix("_delta_mean") for c in table.columns if c.endswith("_delta_mean")]
    baseline = table["baseline"].iloc[0] if len(table) else "-"
    lines = [f"# Sweep `{sweep}`: difference to `{baseline}`, paired by seed (mean ± sample std of the differences, n pairs)", "",
             "| variant | n | " + " | ".join(f"Δ {label(m)}" for m in metrics) + " |",
             "| --- | --- |" + " --- |" * len(metrics)]
    for variant, row in table.iterrows():
        cells = [cell(row[f"{m}_delta_mean"], row[f"{m}_delta_std"], signed=True) for m in metrics]
        lines.append(f"| {variant} | {int(row['n'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cell(mean: float, std: float, signed: bool = False) -> str:
    """``mean ± std`` to 3 decimals (signed for effects); the mean alone when std is NaN (one seed)."""
    if math.isnan(mean):
        return ""
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text if math.isnan(std) else f"{text} ± {std:.3f}"


def markdown(summary: pd.DataFrame, sweep: str) -> str:
    metrics = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    lines = [f"# Sweep `{sweep}`: mean ± sample std over seeds (n seeds)", "",
             "| variant | n | " + " | ".join(label(m) for m in metrics) + " |",
             "| --- | --- |" + " --- |" * len(metrics)]
    for variant, row in summary.iterrows():
        cells = [cell(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics]
        lines.append(f"| {variant} | {int(row['n'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def spearman(x: pd.Series, y: pd.Series) -> dict[str, float | int | None]:
    """Spearman's rank correlation of the runs having both values (scipy); None below 3 runs or
    for a constant variable, where it means nothing."""
    from scipy.stats import spearmanr

    both = pd.DataFrame({"x": x, "y": y}).dropna()
    n = len(both)
    if n < 3 or both["x"].nunique() < 2 or both["y"].nunique() < 2:
        return {"spearman": None, "p_value": None, "n": n}
    result = spearmanr(both["x"], both["y"])
    return {"spearman": float(result.statistic), "p_value": float(result.pvalue), "n": n}
