"""End to end on a real dataset format: `dvc repro` on a CUB_200_2011-layout miniature (glyph
content, so that there is something to learn) with a validation split, a resize cache, the
paper's RandomResizedCrop augmentation and a small backbone; the model must retrieve the 100
*unseen* test classes clearly better than the same network untrained."""

from __future__ import annotations

import json
import sys

import pytest

from miniatures import write_cub200_glyphs
from test_pipeline import run, set_params, tiny_project

pytestmark = pytest.mark.e2e

CUB_PARAMS = {
    "data": {"name": "cub200", "val_classes": 0.1},
    "preprocess": {"channels": 3, "resize": 36, "format": "jpeg"},
    "transforms": {"train": "random_resized_crop", "size": 32, "resize": 36, "crop_scale": [0.6, 1.0]},
    "sampler": {"class_balanced": {"samples_per_class": 4}},
    "train": {"epochs": 6, "batch_size": 48, "num_threads": 1, "track_test_recall": False},
}


def untrained_recall_at_1(repo) -> float:
    """Reference: the same seeded network before its first step, embedded and scored like the
    pipeline (eval transforms, the evaluator)."""
    code = f"""
import json, sys
sys.path.insert(0, {str(repo)!r})
from dml.config import load_params
from dml.data.loading import load_split
from dml.data.stats import load_stats
from dml.evaluation import evaluate_embeddings
from dml.training.metric import build_training
from dml.training.monitoring import embed_pass
params = load_params({str(repo / 'params.yaml')!r})
root = {str(repo / 'data/preprocessed')!r}
setup = build_training(params, load_split(root, "train"), load_stats(root))
test = load_split(root, "test")
vectors = embed_pass(setup.model, test, params)
print(json.dumps(evaluate_embeddings(vectors, test.labels, cfg=params.eval.model_copy(update={{"clustering": False}})).metrics["recall_at_1"]))
"""
    return json.loads(run([sys.executable, "-c", code], repo).stdout.strip().splitlines()[-1])


def test_cub_format_pipeline_learns_unseen_classes(tmp_path):
    raw = tmp_path / "raw"
    write_cub200_glyphs(raw)
    repo = tiny_project(tmp_path / "repo")
    set_params(repo, **{**CUB_PARAMS, "data": {**CUB_PARAMS["data"], "root": str(raw)}})  # the folder *containing* CUB_200_2011
    run(["git", "commit", "-qam", "cub"], repo)
    run([sys.executable, "-m", "dvc", "repro"], repo)

    dataset = json.loads((repo / "data/prepared/dataset.json").read_text())
    counts = {split: (info["classes"], info["images"]) for split, info in dataset["splits"].items()}
    assert counts == {"train": (90, 720), "val": (10, 80), "test": (100, 800)}
    cache = sorted(p.relative_to(repo / "data/preprocessed").as_posix() for p in (repo / "data/preprocessed").rglob("*") if p.is_file())
    assert cache == ["manifest.parquet", "shards/00000.arrow", "stats.json"]  # the resize cache is packed: training read shards
    trained = json.loads((repo / "metrics/train.json").read_text())
    assert trained["selection"] == "val" and 1 <= trained["selected_epoch"] <= 6
    recall = json.loads((repo / "metrics/eval.json").read_text())["recall_at_1"]
    baseline = untrained_recall_at_1(repo)
    assert recall > baseline + 0.15, (recall, baseline)
