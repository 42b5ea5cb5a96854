"""A sweep's report (reports/<sweep>/): the tables of :mod:`dml.studies.tables` as files and the
paper's figures: R@1 against rho (the paper's generalisation figure, Spearman's rank correlation
over all runs in the title), R@1 against pi_ratio, R@1 per variant with error bars, and the
across-method figure: one point per variant (mean over seeds), R@1, NMI and pi_ratio against each
rho, with Spearman over the variant means (``means:`` keys of correlations.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dml.io import atomic_file, write_json
from dml.paths import TRAIN_CURVE
from dml.plotting import save_figure
from dml.studies.experiments import Experiment
from dml.studies.sweep import SEED_KEY, Plan
from dml.studies.tables import TRAIN_RHO, collect_runs, effects, effects_markdown, label, markdown, spearman, summarize


def _corr_text(stats: dict[str, Any]) -> str:
    if stats["spearman"] is None:
        return f"Spearman n/a (n={stats['n']})"
    return f"Spearman r = {stats['spearman']:.2f} (p = {stats['p_value']:.2g}, n = {stats['n']})"


def _scatter(runs: pd.DataFrame, xs: list[str], sweep: str, path: Path, what: str) -> dict[str, dict[str, Any]]:
    """R@1 against each of ``xs`` (one panel each), coloured by variant; returns the Spearman
    statistics shown in the panel titles."""
    import matplotlib.pyplot as plt

    stats = {}
    fig, axes = plt.subplots(1, len(xs), figsize=(5.2 * len(xs), 4.2), dpi=120, squeeze=False)
    for ax, column in zip(axes[0], xs):
        stats[f"recall_at_1~{column}"] = corr = spearman(runs[column], runs["recall_at_1"])
        for variant, group in runs.groupby("variant", sort=False):
            ax.scatter(group[column], group["recall_at_1"], label=variant, s=28)
        ax.set_xlabel(label(column) + ("  (lower: flatter spectrum)" if column.startswith("rho") else ""))
        ax.set_ylabel("Recall@1 (test)")
        ax.set_title(f"{sweep}: R@1 vs {label(column)}\n{_corr_text(corr)}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7, title="variant", title_fontsize=7)
    fig.suptitle(f"Sweep {sweep}: {what} (every run)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return stats


MEAN_YS = ("recall_at_1", "nmi", "pi_ratio")  # against each rho, one point per variant


def _means_scatter(summary: pd.DataFrame, rhos: list[str], sweep: str, path: Path) -> dict[str, dict[str, Any]]:
    """The paper's across-method figure: one point per variant (mean over its seeds, bars one
    sample std), R@1, NMI and pi_ratio against each rho; Spearman over the variant means."""
    import matplotlib.pyplot as plt

    ys = [y for y in MEAN_YS if f"{y}_mean" in summary]
    stats = {}
    fig, axes = plt.subplots(len(ys), len(rhos), figsize=(5.2 * len(rhos), 4.0 * len(ys)), dpi=120, squeeze=False)
    for row, y in enumerate(ys):
        for ax, x in zip(axes[row], rhos):
            stats[f"means:{y}~{x}"] = corr = spearman(summary[f"{x}_mean"], summary[f"{y}_mean"])
            ax.errorbar(summary[f"{x}_mean"], summary[f"{y}_mean"], xerr=summary[f"{x}_std"].fillna(0),
                        yerr=summary[f"{y}_std"].fillna(0), fmt="o", ms=4, capsize=2, lw=0.8)
            for variant, point in summary.iterrows():
                ax.annotate(str(variant), (point[f"{x}_mean"], point[f"{y}_mean"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
            ax.set_xlabel(label(x) + ("  (lower: flatter spectrum)" if x.startswith("rho") else ""))
            ax.set_ylabel(label(y))
            ax.set_title(f"{label(y)} vs {label(x)}: {_corr_text(corr)}", fontsize=9)
            ax.grid(True, alpha=0.3)
    fig.suptitle(f"Sweep {sweep}: one point per variant (mean over seeds, bars: one std)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return stats


def _bars(runs: pd.DataFrame, summary: pd.DataFrame, sweep: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(summary) + 2), 4.0), dpi=120)
    positions = np.arange(len(summary))
    ax.bar(positions, summary["recall_at_1_mean"], yerr=summary["recall_at_1_std"].fillna(0.0), capsize=4,
           color="#9ecae1", edgecolor="#3182bd")
    for i, variant in enumerate(summary.index):
        seeds = runs.loc[runs["variant"] == variant, "recall_at_1"]
        ax.scatter(np.full(len(seeds), i), seeds, color="black", s=10, zorder=3)
    ax.set_xticks(positions, summary.index, rotation=45 if len(summary) > 5 else 0, ha="right" if len(summary) > 5 else "center")
    low = min(runs["recall_at_1"].min(), (summary["recall_at_1_mean"] - summary["recall_at_1_std"].fillna(0.0)).min())
    high = max(runs["recall_at_1"].max(), (summary["recall_at_1_mean"] + summary["recall_at_1_std"].fillna(0.0)).max())
    pad = max(0.1 * (high - low), 0.005)
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad) if high <= 1.0 else high + pad)  # differences, not bar heights
    ax.set_xlabel("variant")
    ax.set_ylabel("Recall@1 (test): mean ± sample std\n(dots: seeds; the axis starts above 0)", fontsize=8)
    ax.set_title(f"Sweep {sweep}: Recall@1 per variant", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


SHOWN = ("recall_at_1", "map_at_r", "nmi", "rho_test", TRAIN_RHO, "pi_ratio")


def show_table(plan: Plan, experiments: dict[str, Experiment], root: Path | str) -> pd.DataFrame:
    """One row per run of the plan: its experiment, whether it is done (``missing``; ``stale``:
    an experiment of that name holds other params), the overrides that vary across the sweep and
    the numbers that matter."""
    runs = _collect(plan, experiments, root).set_index("exp")
    keys = [key for key in dict.fromkeys(k for run in plan.runs for k in run.overrides if k != SEED_KEY)
            if len({repr(run.overrides.get(key)) for run in plan.runs}) > 1] + [SEED_KEY]
    rows = []
    for run in plan.runs:
        exp = experiments.get(run.exp_name)
        state = "missing" if exp is None else "done" if run.exp_name in runs.index else "stale"
        row = {"exp": run.exp_name, "state": state, **{key: run.overrides.get(key) for key in keys}}
        if state == "done":
            row |= {label(m): runs.at[run.exp_name, m] for m in SHOWN if m in runs.columns}
        rows.append(row)
    return pd.DataFrame(rows)


def _collect(plan: Plan, experiments: dict[str, Experiment], root: Path | str) -> pd.DataFrame:
    from dml.studies.experiments import read_at

    return collect_runs(plan, experiments, lambda exp: read_at(root, TRAIN_CURVE.as_posix(), exp.rev))


FIGURES = {"rho": "r1_vs_rho.png", "pi": "r1_vs_pi_ratio.png", "bars": "r1_by_variant.png", "means": "means_vs_rho.png"}


def write_report(runs: pd.DataFrame, summary: pd.DataFrame, sweep: str, out_dir: Path) -> list[Path]:
    """runs.csv, table.csv, table.md, correlations.json and the figures; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    written = []
    paired = effects(runs, list(summary.index))
    for name, text in (("runs.csv", runs.to_csv(index=False)), ("table.csv", summary.to_csv()),
                       ("table.md", markdown(summary, sweep)), ("effects.csv", paired.to_csv()),
                       ("effects.md", effects_markdown(paired, sweep))):
        with atomic_file(out_dir / name) as tmp:
            tmp.write_text(text)
        written.append(out_dir / name)
    correlations: dict[str, Any] = {}
    if "recall_at_1" in runs and len(runs):
        rhos = [c for c in (TRAIN_RHO, *sorted(c for c in runs if c.startswith("rho_") and c != TRAIN_RHO)) if c in runs]
        if rhos:
            correlations |= _scatter(runs, rhos, sweep, out_dir / FIGURES["rho"], "generalisation vs spectral decay")
            written.append(out_dir / FIGURES["rho"])
            correlations |= _means_scatter(summary, rhos, sweep, out_dir / FIGURES["means"])
            written.append(out_dir / FIGURES["means"])
        if "pi_ratio" in runs:
            correlations |= _scatter(runs, ["pi_ratio"], sweep, out_dir / FIGURES["pi"], "generalisation vs embedding density")
            written.append(out_dir / FIGURES["pi"])
        _bars(runs, summary, sweep, out_dir / FIGURES["bars"])
        written.append(out_dir / FIGURES["bars"])
    write_json(out_dir / "correlations.json", correlations)
    written.append(out_dir / "correlations.json")
    return written


def aggregate(plan: Plan, experiments: dict[str, Experiment], root: Path | str,
              out_dir: Path | str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Runs, summary and the report files of ``plan`` under ``out_dir`` (reports/<sweep>/)."""
    root = Path(root)
    runs = _collect(plan, experiments, root)
    summary = summarize(runs, plan.variants)
    out = Path(out_dir) if out_dir is not None else root / "reports" / plan.spec.name
    written = write_report(runs, summary, plan.spec.name, out)
    # where the numbers come from: the commit(s) the experiments ran from, and how many of the plan's runs
    write_json(out / "source.json", {"sweep": plan.spec.name, "runs_planned": len(plan.runs), "runs_reported": len(runs),
                                     "commits": sorted({experiments[name].baseline for name in runs.get("exp", [])})})
    return runs, summary, [*written, out / "source.json"]
