"""Images/s of the training loader vs torchvision ``ImageFolder`` + PIL, measured in one run.

Generates ``--images`` CUB-like JPEGs (500x375, quality 90, smooth random content, in
``<class>/<image>.jpg`` folders) and times one pass of each loader at the paper's training
transforms (RandomResizedCrop(224) + horizontal flip), batch 112, the same number of workers:

* ``baseline``: ``torchvision.datasets.ImageFolder`` (PIL decode) with the classic transforms
  ``RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize`` (float32 batches);
* ``ours``: :class:`dml.data.loading.FileSplit` + ``train_transform`` (torchvision.io decode,
  transforms.v2 on uint8 tensors; uint8 batches: the model normalises on its device);
* ``ours (256 px cache, files)``: the same, reading a cache of 256 px JPEG files (shorter side
  256, JPEG 95), what the pipeline's cache was before it was packed;
* ``ours (256 px cache, packed)``: the preprocess stage's own cache (``preprocess.resize: 256``,
  JPEG 95, built by :func:`dml.data.preprocess.build_preprocessed`): the same kind of bytes
  packed into Arrow shards and read memory-mapped (:class:`dml.data.loading.ShardSplit`), which
  is what the pipeline trains from when ``preprocess.resize`` is set;
* ``ours (256 px cache, packed raw)``: the same cache with ``preprocess.format: raw``, the
  resized pixels themselves (no decoding when loading; about 10x the disk of JPEG).

Runs alternate A-B-C, C-B-A so that machine noise hits all; the median images/s and the ratios
against the baseline are printed. Usage:
``python benchmarks/loader_throughput.py [--images 1200] [--workers 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dml.data.config import PreprocessConfig, TransformsConfig  # noqa: E402
from dml.data.loading import EpochBatches, FileSplit, ImageSource, load_split, train_loader  # noqa: E402
from dml.data.manifest import write_manifest  # noqa: E402
from dml.data.preprocess import build_preprocessed  # noqa: E402
from dml.samplers.basic import RandomSampler  # noqa: E402

BATCH = 112
PAPER = TransformsConfig(train="random_resized_crop", size=224, resize=256, hflip=True)


def write_images(root: Path, count: int, classes: int = 20, size: tuple[int, int] = (500, 375)) -> list[tuple[str, int]]:
    """Smooth random colour fields (upsampled noise) compress like photos, unlike white noise."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        label = i % classes
        coarse = rng.integers(0, 256, (size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        rel = f"{label:03d}/{i:05d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / rel, quality=90)
        rows.append((rel, label))
    return rows


def cache_images(source: Path, target: Path, rows: list[tuple[str, int]], shorter: int = 256) -> None:
    for rel, _ in rows:
        with Image.open(source / rel) as image:
            w, h = image.size
            scale = shorter / min(w, h)
            out = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        out.save(target / rel, quality=95)


def baseline_seconds(root: Path, workers: int) -> tuple[float, int]:
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), transform), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, drop_last=True)
    started, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return time.perf_counter() - started, seen


def packed_cache(raw: Path, prepared: Path, out: Path, rows: list[tuple[str, int]], fmt: str = "jpeg") -> ImageSource:
    """The preprocess stage's 256 px cache (JPEG 95 or ``fmt``) of the raw images, packed; its train split."""
    columns = {"id": list(range(len(rows))), "path": [rel for rel, _ in rows], "label": [label for _, label in rows],
               "class_name": [str(label) for _, label in rows], "split": ["train"] * len(rows)}
    prepared.mkdir(parents=True, exist_ok=True)
    write_manifest(prepared, columns, {"name": "benchmark", "image_root": str(raw)})
    build_preprocessed(prepared, out, PreprocessConfig(channels=3, resize=256, format=fmt, quality=95), progress=False)
    return load_split(out, "train")


def file_split(root: Path, rows: list[tuple[str, int]]) -> ImageSource:
    labels = np.array([label for _, label in rows])
    return FileSplit(root, np.array([rel.encode() for rel, _ in rows], dtype=np.bytes_), labels, np.arange(len(rows)), 3)


def ours_seconds(split: ImageSource, workers: int) -> tuple[float, int]:
    labels = split.labels
    batches = EpochBatches(RandomSampler(labels, BATCH))
    batches.start(np.random.default_rng(0), 0)
    loader = train_loader(split, PAPER, batches, torch.device("cpu"), workers, 2)
    started, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += len(images)
    return time.perf_counter() - started, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, cache = Path(tmp) / "raw", Path(tmp) / "cache"
        rows = write_images(raw, args.images)
        cache_images(raw, cache, rows)
        packed = packed_cache(raw, Path(tmp) / "prepared", Path(tmp) / "preprocessed", rows)
        packed_raw = packed_cache(raw, Path(tmp) / "prepared", Path(tmp) / "preprocessed-raw", rows, "raw")
        runs = {
            "baseline (ImageFolder + PIL)": lambda: baseline_seconds(raw, args.workers),
            "ours (raw JPEGs)": lambda: ours_seconds(file_split(raw, rows), args.workers),
            "ours (256 px cache, files)": lambda: ours_seconds(file_split(cache, rows), args.workers),
            "ours (256 px cache, packed)": lambda: ours_seconds(packed, args.workers),
            "ours (256 px cache, packed raw)": lambda: ours_seconds(packed_raw, args.workers),
        }
        rates: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                seconds, seen = runs[name]()
                rates[name].append(seen / seconds)
    print(f"{args.images} JPEGs 500x375, RandomResizedCrop(224) + flip, batch {BATCH}, {args.workers} workers, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")
    base = statistics.median(rates[names[0]])
    for name in names:
        rate = statistics.median(rates[name])
        print(f"{name:32s} {rate:8.1f} images/s  {rate / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
