"""Stage preprocess: decode, resize and stack the prepared images into per-split uint8 arrays,
and record the train split's channel mean/std."""

from __future__ import annotations

import hashlib

import numpy as np
from tqdm import tqdm

from dml.config import Params
from dml.data.arrays import SplitArrays, Stats, save_split, save_stats
from dml.data.images import load_image
from dml.data.manifest import SPLITS, read_manifest
from dml.errors import DatasetError
from dml.io import atomic_dir
from dml.paths import PREPARED, PREPROCESSED
from stages._common import run_stage


def preprocess(params: Params) -> None:
    cfg = params.preprocess
    manifest = read_manifest(PREPARED)
    columns = {name: manifest.column(name).to_numpy(zero_copy_only=False) for name in ("id", "path", "label", "split")}
    with atomic_dir(PREPROCESSED) as root:
        splits = {}
        for split in SPLITS:
            rows = np.flatnonzero(columns["split"] == split)
            if len(rows) == 0:
                raise DatasetError(f"{PREPARED}: the manifest has no {split!r} images")
            images = np.stack(
                [load_image(PREPARED / columns["path"][i], cfg.image_size, cfg.channels) for i in tqdm(rows, desc=split, unit="img")]
            )
            splits[split] = SplitArrays(images=images, labels=columns["label"][rows].astype(np.int64), ids=columns["id"][rows].astype(np.int64))
            save_split(root, split, splits[split])
        train = splits["train"]
        pixels = train.images.astype(np.float64)
        digest = hashlib.sha256(train.images.tobytes() + train.labels.tobytes()).hexdigest()
        stats = Stats(
            mean=pixels.mean(axis=(0, 2, 3)).tolist(),
            std=pixels.std(axis=(0, 2, 3)).tolist(),
            channels=cfg.channels,
            image_size=cfg.image_size,
            sha256=digest,
        )
        save_stats(root, stats)
    print(", ".join(f"{s}: {len(a)} images, {len(np.unique(a.labels))} classes" for s, a in splits.items()))


def main() -> None:
    run_stage("preprocess", preprocess)


if __name__ == "__main__":
    main()
