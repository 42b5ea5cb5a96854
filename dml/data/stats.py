"""``stats.json`` next to the preprocessed manifest: what a model needs to know about its input.

``mean`` / ``std`` are per channel on the 0-255 scale of the decoded images (computed streaming
over the *train* split by the preprocess stage); a model trained from scratch normalises with
them, a pretrained backbone with its own constants. ``channels`` is the decode mode (1 = gray,
3 = RGB). ``sha256`` identifies the training data a model saw (part of the training fingerprint).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from dml.errors import DatasetError

STATS_NAME = "stats.json"


@dataclass(frozen=True)
class Stats:
    mean: list[float]
    std: list[float]
    channels: int
    sha256: str


def save_stats(root: Path, stats: Stats) -> None:
    (Path(root) / STATS_NAME).write_text(json.dumps(asdict(stats), indent=2) + "\n")


def load_stats(root: Path) -> Stats:
    path = Path(root) / STATS_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: missing (run the preprocess stage)")
    try:
        return Stats(**json.loads(path.read_text()))
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a stats file of this version ({err}); rerun the preprocess stage") from None
