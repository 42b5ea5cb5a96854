"""The sampler table over seeds: mean +- std (ddof=1) of each sampler's stored
``objective_zoo.py`` results (margin loss, 15 epochs), as docs/method-zoo.md shows it (generated
there by ``python -m pipelines.docs_tables``, which holds the code).

Seed 0 is ``benchmarks/results/sampler-<name>/margin.json`` (``class_balanced``, the default, is
``results/zoo/margin.json``), seed k is ``results/sampler-<name>-s<k>/margin.json``, produced by
``python benchmarks/objective_zoo.py --losses margin --set sampler.name=<name> --set train.seed=<k>
--tag sampler-<name>-s<k>``. Usage: ``python benchmarks/sampler_table.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.docs_tables import samplers  # noqa: E402

if __name__ == "__main__":
    print(samplers(), end="")
