"""Checks of a real dataset's files before anything trains on them, and the data.* policies that
decide what happens to the bad ones.

Every listed file is opened and fully decoded (JPEGs at reduced DCT scale, which still reads all
of the compressed data) on ``data.check_workers`` threads (PIL releases the GIL while decoding).
A file can be *bad* (missing, not an image / undecodable, truncated: ``data.on_bad_image``) or an
image that is not RGB (grayscale, CMYK, palette, RGBA...: ``data.on_non_rgb``; "convert" keeps it,
the loaders convert it to RGB as the paper's code does). Dropping files can leave a class without
a positive pair; such classes are dropped too. Everything done is listed in the report.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageFile, UnidentifiedImageError

from dml.data.config import DataConfig
from dml.data.images import DECODE_ERRORS
from dml.data.raw import RawDataset

ProblemKind = Literal["missing", "not_image", "truncated", "non_rgb"]
BAD_KINDS = frozenset({"missing", "not_image", "truncated"})
DESCRIPTION = {"missing": "missing", "not_image": "not an image", "truncated": "truncated", "non_rgb": "not RGB"}


@dataclass(frozen=True)
class Problem:
    """What is wrong with one file (``path`` relative to the image root) and what was done."""

    path: str
    kind: ProblemKind
    detail: str
    action: str = ""


def check_image(path: Path) -> tuple[ProblemKind, str] | None:
    """(kind, detail) of what is wrong with the image file at ``path``, or None if it is a
    complete RGB image."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing", "no such file"
    except OSError as err:
        return ("missing", "not a file") if path.is_dir() else ("not_image", f"unreadable ({err.strerror})")
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode, fmt = image.mode, image.format
            image.draft(None, (1, 1))  # JPEG: decode at 1/8 scale; all compressed data is still read
            image.load()
    except UnidentifiedImageError:
        return "not_image", "PIL cannot identify the format" if data else "empty file"
    except DECODE_ERRORS as err:
        message = str(err) or type(err).__name__
        kind: ProblemKind = "truncated" if "truncated" in message.lower() or isinstance(err, EOFError) else "not_image"
        return kind, f"{type(err).__name__}: {message}"
    # libjpeg silently completes a baseline JPEG that lost only its tail after the last scan; its
    # end-of-image marker must follow the last start-of-scan.
    if fmt == "JPEG" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        return "truncated", "JPEG end-of-image marker missing"
    if mode != "RGB":
        return "non_rgb", f"mode {mode}"
    return None


def check_images(root: Path, paths: list[str], workers: int) -> list[Problem]:
    """The problems of the files ``root / path``, in the order of ``paths``."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated files would pass the checks")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(check_image, (root / p for p in paths), chunksize=64))
    return [Problem(p, *result) for p, result in zip(paths, results) if result is not None]


def apply_policies(dataset: RawDataset, problems: list[Problem], cfg: DataConfig) -> tuple[RawDataset, list[Problem], str | None]:
    """(kept rows, problems with their action, error) where error is the one-line failure the
    policies call for (None when the dataset can be used)."""
    drop: set[str] = set()
    decided, refused = [], []
    for problem in problems:
        policy = cfg.on_bad_image if problem.kind in BAD_KINDS else cfg.on_non_rgb
        action = {"error": "error", "skip": "skipped", "convert": "converted to RGB at load time"}[policy]
        decided.append(Problem(problem.path, problem.kind, problem.detail, action))
        if policy == "error":
            refused.append(problem)
        elif policy == "skip":
            drop.add(problem.path)
    error = None
    if refused:
        first = refused[0]
        hint = "data.on_bad_image: skip drops them" if first.kind in BAD_KINDS else "data.on_non_rgb: convert or skip keeps or drops them"
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(p.kind for p in refused).items()))
        error = f"{dataset.image_root / first.path}: {DESCRIPTION[first.kind]} ({first.detail}); {len(refused)} file(s) refused in all ({kinds}); {hint}"
    kept = dataset.take([i for i, p in enumerate(dataset.paths) if p not in drop]) if drop else dataset
    return kept, decided, error


def drop_unusable_classes(dataset: RawDataset) -> tuple[RawDataset, list[dict]]:
    """Drop what cannot be evaluated or learned from: in train/val/test a class with fewer than two
    images (no positive pair); in query/gallery the queries of an item with no gallery image."""
    counts = Counter(zip(dataset.splits, dataset.labels))
    gallery = {label for split, label in counts if split == "gallery"}
    removed: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(dataset.splits, dataset.labels)):
        split, label = key
        if (split == "query" and label not in gallery) or (split in ("train", "val", "test") and counts[key] < 2):
            removed[key].append(i)
    entries = []
    for (split, label), rows in sorted(removed.items()):
        problem = "no gallery image of its item" if split == "query" else f"only {len(rows)} image in split {split}"
        entries.append(
            {"class": dataset.class_names[rows[0]], "label": label, "split": split, "problem": problem,
             "action": f"dropped {len(rows)} {'query image(s)' if split == 'query' else 'image'}", "paths": [dataset.paths[i] for i in rows]}
        )
    gone = {i for rows in removed.values() for i in rows}
    return (dataset.take([i for i in range(len(dataset)) if i not in gone]) if gone else dataset), entries


def report_entries(problems: list[Problem]) -> list[dict]:
    return [asdict(p) for p in problems]
