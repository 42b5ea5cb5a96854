"""Stage pretrain: train the backbone as a classifier of the disjoint source classes (see
dml/training/pretrain.py), or, with ``pretrain.epochs: 0`` (the default), record that training starts
from the backbone's own initialisation. Train always reads models/pretrained.pt."""

from __future__ import annotations

import time

from dml.config import Params
from dml.data.loading import load_splits
from dml.data.stats import load_stats
from dml.errors import DatasetError
from dml.io import write_json
from dml.paths import PREPROCESSED, PRETRAIN_CHECKPOINT, PRETRAIN_METRICS, PRETRAINED, TIMINGS
from dml.training.pretrain import pretrain, save_pretrained
from stages._common import run_stage


def pretrain_stage(params: Params) -> None:
    cfg = params.pretrain
    if cfg.epochs == 0:
        save_pretrained(PRETRAINED, None, {"epochs": 0})
        write_json(PRETRAIN_METRICS, {"epochs": 0})
        print(f"{PRETRAINED}: pretraining off (pretrain.epochs: 0)")
        return
    splits = load_splits(PREPROCESSED)
    if "source" not in splits:
        raise DatasetError(f"pretrain.epochs: {cfg.epochs} needs source classes, but {PREPROCESSED} has no 'source' split; "
                           "set data.glyphs.source_fraction > 0 (or give a manifest rows with split source)")
    source = splits["source"]
    started = time.perf_counter()
    model, record = pretrain(params, source, load_stats(PREPROCESSED), checkpoint=PRETRAIN_CHECKPOINT)
    seconds = time.perf_counter() - started
    last = record[-1]
    metrics = {"epochs": cfg.epochs, "classes": int(len(set(source.labels.tolist()))), "images": len(source),
               "final_loss": last.loss, "final_accuracy": last.accuracy}
    save_pretrained(PRETRAINED, model, {**metrics, "model": params.model.name})
    write_json(PRETRAIN_METRICS, metrics)
    TIMINGS.mkdir(parents=True, exist_ok=True)
    write_json(TIMINGS / "pretrain.json", {"pretrain_seconds": round(seconds, 2), "epoch_seconds": [round(r.seconds, 2) for r in record]})
    PRETRAIN_CHECKPOINT.unlink(missing_ok=True)


def main() -> None:
    run_stage("pretrain", pretrain_stage)


if __name__ == "__main__":
    main()
