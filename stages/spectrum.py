"""Stage spectrum: the paper's embedding-space analysis (spectral decay rho, density pi) with a
plot of the singular value spectrum and its data."""

from __future__ import annotations

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dml.config import Params  # noqa: E402
from dml.embeddings import read_embeddings  # noqa: E402
from dml.io import atomic_file, write_json  # noqa: E402
from dml.metrics.embedding_space import (  # noqa: E402
    embedding_density,
    singular_values,
    spectral_decay,
)
from dml.paths import SPECTRUM_CSV, SPECTRUM_METRICS, SPECTRUM_PNG, embeddings_file, retrieval_splits  # noqa: E402
from dml.plotting import save_figure  # noqa: E402
from stages._common import run_stage  # noqa: E402


def spectrum(params: Params) -> None:
    cfg = params.spectrum
    split = cfg.split if cfg.split == "train" else retrieval_splits()[1]  # test, or a query/gallery dataset's gallery
    table = read_embeddings(embeddings_file(split))
    metrics = {("rho" if k == 0 else f"rho_skip{k}"): spectral_decay(table.vectors, k) for k in cfg.skip_largest}
    metrics.update(embedding_density(table.vectors, table.labels))
    s = singular_values(table.vectors)
    normalised = s / s.sum()

    with atomic_file(SPECTRUM_CSV) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "singular_value", "normalised"])
        writer.writerows((i + 1, float(v), float(n)) for i, (v, n) in enumerate(zip(s, normalised)))

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.semilogy(np.arange(1, len(s) + 1), normalised, marker=".", lw=1)
    ax.set_xlabel("singular value rank")
    ax.set_ylabel("normalised singular value")
    ax.set_title(f"{split} embedding spectrum: rho={metrics.get('rho', float('nan')):.3f}, pi_ratio={metrics['pi_ratio']:.3f}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, SPECTRUM_PNG)
    write_json(SPECTRUM_METRICS, metrics)
    print(", ".join(f"{key} {value:.4f}" for key, value in metrics.items()))


def main() -> None:
    run_stage("spectrum", spectrum)


if __name__ == "__main__":
    main()
