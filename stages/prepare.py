"""Stage prepare: generate the glyphs dataset, or read a real one (CUB200, CARS196, SOP, In-Shop,
an image folder, a CSV/Parquet manifest), into ``data/prepared/``: ``manifest.parquet`` (the
contract of dml/data/manifest.py), ``dataset.json`` (counts per split) and ``report.json`` (every
file that is not a clean RGB image, every dropped class, and what was done about it).

Real datasets are not copied: the manifest's ``image_root`` points at the raw folder, relative to
``data/prepared`` when ``data.root`` is relative, so the outputs hold no absolute paths. The
glyphs are generated into one packed shard of raw pixels (dml/data/shards.py), not 22k files.
Everything is written through ``atomic_dir``: a failed run leaves the previous output; a run
that fails on bad files writes their report to ``data/prepare-errors.json`` first.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import features

from dml.config import Params
from dml.data.archive import Limits, resolve_root
from dml.data.config import DataConfig
from dml.data.formats import FORMATS
from dml.data.glyphs import generate_glyphs
from dml.data.manifest import IMAGE_ROOT_KEY, SPLITS, write_manifest
from dml.data.raw import RawDataset, hold_out_val
from dml.data.shards import ShardWriter
from dml.data.validate import apply_policies, check_images, drop_unusable_classes, report_entries
from dml.errors import DatasetError
from dml.io import atomic_dir, write_json
from dml.paths import EXTRACTED, PREPARE_ERRORS, PREPARED
from stages._common import run_stage


def write_glyphs(cfg: DataConfig, out: Path) -> tuple[RawDataset, dict[str, Any], dict[int, tuple[str, int]]]:
    """Generate the glyphs and pack their raw pixels into ``out/shards/``; returns the dataset
    (``path`` names an image as ``<label>/<id>``), its facts, and each id's (shard, row)."""
    knobs = cfg.glyphs
    glyphs = generate_glyphs(
        seed=cfg.seed,
        samples_per_class=knobs.samples_per_class,
        image_size=knobs.image_size,
        difficulty=knobs.difficulty,
        min_fonts=knobs.min_fonts,
        train_fraction=cfg.train_fraction,
        max_classes=knobs.max_classes,
        split_by=knobs.split_by,
        source_fraction=knobs.source_fraction,
    )
    paths, locations = [], {}
    with ShardWriter(out, "raw") as writer:
        for i, (image, label) in enumerate(zip(glyphs.images, glyphs.labels)):
            locations[i] = writer.add(i, image, (1, *image.shape))
            paths.append(f"{label:04d}/{i:06d}")
    labels = glyphs.labels.tolist()
    dataset = RawDataset(
        image_root=out,
        ids=list(range(len(paths))),
        paths=paths,
        labels=labels,
        class_names=[glyphs.class_names[label] for label in labels],
        splits=glyphs.splits,
    )
    return dataset, {"sha256": glyphs.sha256, "freetype": features.version_module("freetype2") or "unknown"}, locations


def read_real(cfg: DataConfig, extracted: Path = EXTRACTED) -> tuple[RawDataset, dict[str, Any]]:
    """archive -> folder -> reader -> image checks -> policies -> unusable classes dropped.
    Returns the dataset and its report; raises (after writing the report to PREPARE_ERRORS) when
    a policy says error."""
    root = resolve_root(Path(cfg.root), cfg.sha256, extracted, Limits.of(cfg), file_ok=cfg.name == "manifest")
    dataset = FORMATS[cfg.name](root, cfg)
    checked = len(dataset)
    problems = check_images(dataset.image_root, dataset.paths, cfg.check_workers)
    dataset, problems, error = apply_policies(dataset, problems, cfg)
    report: dict[str, Any] = {
        "dataset": cfg.name,
        "root": cfg.root,
        "checked": checked,
        "policies": {"on_bad_image": cfg.on_bad_image, "on_non_rgb": cfg.on_non_rgb},
        "files": report_entries(problems),
    }
    if error:
        write_json(PREPARE_ERRORS, report)
        raise DatasetError(f"{error} (all listed in {PREPARE_ERRORS})")
    dataset, report["classes"] = drop_unusable_classes(dataset)
    return dataset, report


def image_root_value(image_root: Path, out: Path) -> str:
    """The manifest's ``image_root``: "." for files inside ``out``, else the path from the final
    ``PREPARED`` folder (relative when ``image_root`` is), else absolute."""
    if image_root == out:
        return "."
    return str(image_root) if image_root.is_absolute() else os.path.relpath(image_root, PREPARED)


def split_counts(dataset: RawDataset) -> dict[str, dict[str, int]]:
    images = Counter(dataset.splits)
    classes = Counter(split for split, _ in set(zip(dataset.splits, dataset.labels)))
    return {split: {"images": images[split], "classes": classes[split]} for split in SPLITS if split in images}


def _check_usable(dataset: RawDataset, cfg: DataConfig) -> None:
    splits = set(dataset.splits)
    needed = ["train", *(("query", "gallery") if splits & {"query", "gallery"} else ("test",))]
    for split in needed:
        if split not in splits:
            raise DatasetError(f"data.root: {cfg.name} at {cfg.root} has no {split!r} images (after dropping bad files and classes)")


def prepare(params: Params) -> None:
    cfg = params.data
    started = time.perf_counter()
    report: dict[str, Any] = {"dataset": cfg.name, "checked": 0, "files": [], "classes": []}
    extra: dict[str, Any] = {}
    locations: dict[int, tuple[str, int]] = {}
    real = None if cfg.name == "glyphs" else read_real(cfg)  # before atomic_dir: a failure leaves the old output
    with atomic_dir(PREPARED) as out:
        if real is None:
            dataset, extra, locations = write_glyphs(cfg, out)
        else:
            dataset, report = real
        dataset = hold_out_val(dataset, cfg.val_classes, cfg.seed)
        _check_usable(dataset, cfg)
        counts = split_counts(dataset)
        info = {
            "name": cfg.name,
            IMAGE_ROOT_KEY: image_root_value(dataset.image_root, out),
            "images": len(dataset),
            "classes": len(set(dataset.labels)),
            "splits": counts,
            **extra,
        }
        columns = {"id": dataset.ids, "path": dataset.paths, "label": dataset.labels, "class_name": dataset.class_names, "split": dataset.splits}
        if locations:
            columns["shard"], columns["row"] = (list(c) for c in zip(*(locations[i] for i in dataset.ids)))
        write_manifest(
            out,
            columns,
            metadata={k: v for k, v in info.items() if isinstance(v, str)},
        )
        write_json(out / "dataset.json", info)
        write_json(out / "report.json", report)
    PREPARE_ERRORS.unlink(missing_ok=True)
    actions = Counter(f"{p['kind']} {p['action']}" for p in report["files"])
    dropped = sum(len(entry["paths"]) for entry in report["classes"])
    notes = [f"{n} {what}" for what, n in sorted(actions.items())] + ([f"{dropped} images of unusable classes dropped"] if dropped else [])
    print(
        f"prepared {cfg.name}: {info['images']} images, {info['classes']} classes ("
        + ", ".join(f"{s} {c['images']}/{c['classes']}" for s, c in counts.items())
        + f" images/classes) in {time.perf_counter() - started:.1f} s"
        + (f"; {'; '.join(notes)} (see {PREPARED / 'report.json'})" if notes else "")
    )


def main() -> None:
    run_stage("prepare", prepare)


if __name__ == "__main__":
    main()
