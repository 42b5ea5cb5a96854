"""Stage report: record this pipeline result in MLflow (params, metrics, curves, plots, the
retrieval gallery, model). Its DVC outputs are the two figures; which MLflow run holds the result
(machine-local: run ids, the store's absolute path) goes to the git-ignored .dml/report.json."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dml.config import Params  # noqa: E402
from dml.io import read_json, write_json  # noqa: E402
from dml.paths import (  # noqa: E402
    CURVE_PNG,
    EVAL_METRICS,
    GALLERY_PNG,
    INDEX_META,
    MODEL,
    REPORT,
    SPECTRUM_METRICS,
    SPECTRUM_PNG,
    TIMINGS,
    TRAIN_CURVE,
    TRAIN_METRICS,
    TRAIN_SPECTRUM_PNG,
)
from dml.plotting import save_figure  # noqa: E402
from dml.serving import save_mlflow_model  # noqa: E402
from dml.tracking import CURVE_METRICS, model_run_key, report_result  # noqa: E402
from stages._common import run_stage  # noqa: E402


def read_curves() -> dict[str, list[tuple[int, float]]]:
    with TRAIN_CURVE.open() as handle:
        rows = list(csv.DictReader(handle))
    curves: dict[str, list[tuple[int, float]]] = {}
    for column, metric in CURVE_METRICS.items():
        points = [(int(r["epoch"]), float(r[column])) for r in rows if r.get(column) not in ("", None)]
        if points:
            curves[metric] = points
    return curves


def plot_curves(curves: dict[str, list[tuple[int, float]]]) -> None:
    shown = [name for name in (CURVE_METRICS["loss"], CURVE_METRICS["test_recall_at_1"]) if name in curves]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.2), dpi=120, squeeze=False)
    for ax, name in zip(axes[0], shown):
        steps, values = zip(*curves[name])
        ax.plot(steps, values, marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, CURVE_PNG)


# (panel title, [(curve column, legend)], y label) of the spectrum-over-training figure
SPECTRUM_PANELS = [
    ("test Recall@1 (monitor.queries sampled queries)", [("test_recall_at_1", "R@1")], "Recall@1"),
    ("spectral decay rho (lower: flatter)", [("train_rho", "rho"), ("train_rho_skip1", "rho, largest value dropped (paper)")], "KL(U || s)"),
    ("embedding density", [("train_pi_ratio", "pi_ratio")], "pi_intra / pi_inter"),
    ("top singular values", [("train_sv1", "1st"), ("train_sv2", "2nd"), ("train_sv3", "3rd")], "share of the spectrum"),
]


def plot_spectrum_over_training(curves: dict[str, list[tuple[int, float]]]) -> None:
    """How the training embeddings' spectrum and density evolve, next to test Recall@1 (the
    paper's argument is about that evolution)."""
    fig, axes = plt.subplots(1, len(SPECTRUM_PANELS), figsize=(4.2 * len(SPECTRUM_PANELS), 3.4), dpi=120)
    for ax, (title, columns, ylabel) in zip(axes, SPECTRUM_PANELS):
        lines = [(CURVE_METRICS[column], label) for column, label in columns]
        for name, label in lines:
            if name in curves:
                steps, values = zip(*curves[name])
                ax.plot(steps, values, marker="o", ms=3, label=label)
        if not any(name in curves for name, _ in lines):
            ax.text(0.5, 0.5, "not recorded\n(train.spectrum_every: 0\nor train.track_test_recall: false)",
                    ha="center", va="center", transform=ax.transAxes, fontsize=8)
        elif len(lines) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Embedding space of a fixed sample of training images over training, and test Recall@1", fontsize=10)
    fig.tight_layout()
    save_figure(fig, TRAIN_SPECTRUM_PNG)


def report(params: Params) -> None:
    metrics: dict[str, float] = {}
    # Grouped by prefix (see dml.tracking.METRIC_GROUPS); index/meta.json's numbers (build seconds,
    # ms per query, bytes, ...) too: index types are compared side by side like any other ablation.
    # Wall-clock times come from this machine's timings files when the stages ran here.
    sources = [(EVAL_METRICS, "eval"), (SPECTRUM_METRICS, "space"), (TRAIN_METRICS, "train"), (INDEX_META, "index"),
               (TIMINGS / "train.json", "train"), (TIMINGS / "index.json", "index")]
    for path, group in sources:
        if path.parent == TIMINGS and not path.is_file():
            continue
        for key, value in read_json(path).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"{group}/{key}"] = value
    curves = read_curves()
    plot_curves(curves)
    training_run = model_run_key(MODEL)  # None where this machine did not train the model (say, `dvc pull`ed)
    plot_spectrum_over_training(curves)
    plots = [SPECTRUM_PNG, CURVE_PNG, TRAIN_SPECTRUM_PNG, GALLERY_PNG]
    with tempfile.TemporaryDirectory() as tmp:
        mlflow_model = None
        if params.tracking.log_model:  # a loadable MLflow model (dml/serving.py), snapshotted into the outbox
            mlflow_model = Path(tmp) / "embedding_model"
            save_mlflow_model(MODEL, mlflow_model)
        result = report_result(params, training_run, metrics, curves, plots, MODEL, mlflow_model)
    write_json(REPORT, result)
    kind = "new run" if result["new_run"] else "training run"
    where = f"run {result['run_id']}" if result["run_id"] else "the outbox (the store did not answer; sent later)"
    print(f"MLflow: result of {kind} {result['run_key']} logged to {where} in {result['tracking_uri']}")
    print(where_to_look(result["tracking_uri"]))


def where_to_look(uri: str) -> str:
    """The last lines of a run: where its results are (the MLflow UI command for a local store)."""
    local = uri.startswith(("sqlite:", "file:", "/"))
    mlflow = f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000" if local else f"{uri} in a browser"
    return ("Look at the results: `dvc metrics show` (numbers), plots/*.png or `dvc plots show` (figures),\n"
            f"  {mlflow} (every run, side by side).")


def main() -> None:
    run_stage("report", report)


if __name__ == "__main__":
    main()
