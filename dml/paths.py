"""Where each stage reads and writes, relative to the repository root (mirrors dvc.yaml)."""

import os
from pathlib import Path

PARAMS = Path("params.yaml")
PREPARED = Path("data/prepared")
EXTRACTED = Path("data/extracted")  # dataset archives unpacked by prepare (a cache, not a DVC output)
PREPARE_ERRORS = Path("data/prepare-errors.json")  # the bad-file report of a prepare run that failed
PREPROCESSED = Path("data/preprocessed")
TRAIN_CONFIG = Path("configs/train.json")  # the resolved training config (stage configure)
MODEL = Path("models/model.pt")
PRETRAINED = Path("models/pretrained.pt")  # the pretrain stage's backbone (or "none")
PRETRAIN_METRICS = Path("metrics/pretrain.json")
CHECKPOINT = Path("checkpoints/train.pt")
PRETRAIN_CHECKPOINT = Path("checkpoints/pretrain.pt")
EMBEDDINGS = Path("embeddings")
INDEX = Path("index")
INDEX_FILE = INDEX / "test.faiss"
INDEX_META = INDEX / "meta.json"
TRAIN_METRICS = Path("metrics/train.json")
TRAIN_CURVE = Path("metrics/train_curve.csv")
EVAL_METRICS = Path("metrics/eval.json")
SPECTRUM_METRICS = Path("metrics/spectrum.json")
SPECTRUM_CSV = Path("plots/spectrum.csv")
SPECTRUM_PNG = Path("plots/spectrum.png")
CURVE_PNG = Path("plots/train_curve.png")
TRAIN_SPECTRUM_PNG = Path("plots/train_spectrum.png")
GALLERY_PNG = Path("plots/gallery.png")
# Machine-local state under the git-ignored .dml/, never a DVC output, so that tracked metrics and
# dvc.lock hold only what the same inputs reproduce (no wall-clock time, run id or absolute path):
# - wall-clock times of this workspace's last stage runs (the report logs them to MLflow);
TIMINGS = Path(".dml/timings")
# - the MLflow run of this workspace's last report (run key and id, experiment, store URI);
REPORT = Path(".dml/report.json")
# - which training run wrote which model file: <sha256 of models/model.pt>.json, kept under the
#   repository root (DVC_ROOT, repo_root below), beside the tracking outbox, so that the report
#   of a `dvc exp run --temp` workspace, or a later report of the same model, finds it.
MODEL_RUNS = Path(".dml/model_runs")


def repo_root() -> Path:
    """The user's repository: ``DVC_ROOT``, which DVC sets for stage commands (pointing at the
    original repository also inside ``dvc exp run --temp`` / queued workspaces), else the cwd."""
    return Path(os.environ.get("DVC_ROOT", os.getcwd())).resolve()


def embeddings_file(split: str) -> Path:
    return EMBEDDINGS / f"{split}.parquet"


def retrieval_splits(embeddings: Path = EMBEDDINGS) -> tuple[str, str]:
    """(query split, gallery split) of the evaluation protocol: ("query", "gallery") for datasets
    that have them (In-Shop: queries searched against the gallery), else ("test", "test") (every
    test image queries all the others)."""
    return ("query", "gallery") if (embeddings / "gallery.parquet").is_file() else ("test", "test")


def find_repository(start: Path | str) -> Path | None:
    """The nearest folder at or above ``start`` holding a dvc.yaml (the pipeline's repository), or None."""
    start = Path(start).resolve()
    return next((folder for folder in (start, *start.parents) if (folder / "dvc.yaml").is_file()), None)
