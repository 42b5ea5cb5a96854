"""Stage prepare: generate (or read) the dataset into images + manifest.parquet."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image, features

from dml.config import Params
from dml.data.glyphs import generate_glyphs
from dml.data.manifest import write_manifest
from dml.io import atomic_dir, write_json
from dml.paths import PREPARED
from stages._common import run_stage


def prepare(params: Params) -> None:
    cfg = params.data
    started = time.perf_counter()
    glyphs = generate_glyphs(
        seed=cfg.seed,
        samples_per_class=cfg.samples_per_class,
        image_size=cfg.image_size,
        difficulty=cfg.difficulty,
        min_fonts=cfg.min_fonts,
        train_fraction=cfg.train_fraction,
        max_classes=cfg.max_classes,
    )
    generated = time.perf_counter() - started
    with atomic_dir(PREPARED) as root:
        paths = []
        for i, (image, label) in enumerate(zip(glyphs.images, glyphs.labels)):
            rel = f"images/{label:04d}/{i:06d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            Image.fromarray(image, mode="L").save(buffer, format="PNG", optimize=False)
            (root / rel).write_bytes(buffer.getvalue())
            paths.append(rel)
        info = {
            "name": cfg.name,
            "sha256": glyphs.sha256,
            "freetype": features.version_module("freetype2") or "unknown",
            "classes": len(glyphs.class_names),
            "train_classes": int(len(np.unique(glyphs.labels[glyphs.is_train]))),
            "test_classes": int(len(np.unique(glyphs.labels[~glyphs.is_train]))),
            "images": int(len(glyphs.labels)),
        }
        write_manifest(
            root,
            {
                "id": list(range(len(paths))),
                "path": paths,
                "label": glyphs.labels.tolist(),
                "class_name": [glyphs.class_names[label] for label in glyphs.labels],
                "split": ["train" if t else "test" for t in glyphs.is_train],
            },
            metadata=info,
        )
        write_json(root / "dataset.json", info)
    print(
        f"prepared {info['images']} images of {info['classes']} classes "
        f"({info['train_classes']} train / {info['test_classes']} test) in {time.perf_counter() - started:.1f} s "
        f"(generation {generated:.1f} s); sha256 {glyphs.sha256[:16]}"
    )


def main() -> None:
    run_stage("prepare", prepare)


if __name__ == "__main__":
    main()
