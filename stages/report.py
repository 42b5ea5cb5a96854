"""Stage report: record this pipeline result in MLflow (params, metrics, curves, plots, the
retrieval gallery, model)."""

from __future__ import annotations

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dml.config import Params  # noqa: E402
from dml.io import atomic_file, read_json, write_json  # noqa: E402
from dml.paths import (  # noqa: E402
    CURVE_PNG,
    EVAL_METRICS,
    GALLERY_PNG,
    INDEX_META,
    MODEL,
    REPORT,
    SPECTRUM_METRICS,
    SPECTRUM_PNG,
    TRAIN_CURVE,
    TRAIN_METRICS,
    TRAIN_RUN,
)
from dml.tracking import CURVE_METRICS, report_result  # noqa: E402
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
    shown = [name for name in ("train_loss", "test_recall_at_1") if name in curves]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.2), dpi=120, squeeze=False)
    for ax, name in zip(axes[0], shown):
        steps, values = zip(*curves[name])
        ax.plot(steps, values, marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_file(CURVE_PNG) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def report(params: Params) -> None:
    metrics: dict[str, float] = {}
    # index/meta.json's numbers (build seconds, ms per query, bytes, ...) as index_*: index types
    # are compared side by side in MLflow like any other ablation.
    for path, prefix in ((EVAL_METRICS, ""), (SPECTRUM_METRICS, ""), (TRAIN_METRICS, ""), (INDEX_META, "index_")):
        for key, value in read_json(path).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[prefix + key] = value
    curves = read_curves()
    plot_curves(curves)
    training_run = read_json(TRAIN_RUN).get("run_id") if TRAIN_RUN.is_file() else None
    result = report_result(params, training_run, metrics, curves, [SPECTRUM_PNG, CURVE_PNG, GALLERY_PNG], MODEL)
    write_json(REPORT, result)
    kind = "new run" if result["new_run"] else "training run"
    print(f"MLflow: result logged to {kind} {result['run_id']} in {result['tracking_uri']}")


def main() -> None:
    run_stage("report", report)


if __name__ == "__main__":
    main()
