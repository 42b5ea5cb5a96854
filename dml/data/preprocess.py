"""The preprocess stage's work: an optional resize cache of the prepared images, and the train
split's statistics, streamed image by image so memory does not grow with the dataset.

Output (``data/preprocessed``): ``manifest.parquet`` with the prepared manifest's rows (same ids,
labels, class names, splits, row order) and ``stats.json`` (:mod:`dml.data.stats`).

* With ``resize`` set, every image is decoded in the dataset's mode (gray / RGB), downscaled to
  that shorter side, re-encoded and packed into a few Arrow shards under ``shards/``
  (:mod:`dml.data.shards`), written in id order from the main thread, so the bytes do not depend
  on the number of workers; the manifest's ``path`` keeps naming the source image and
  ``shard`` / ``row`` locate the cached one; image_root is ".".
* With ``resize: null`` nothing is copied: the manifest's image_root points at the prepared
  images (files or shards), relative to ``data/preprocessed`` when the prepared root was relative.

Statistics are over the pixels a loader decodes from the output (a lossy cache is decoded
again), per channel on the 0-255 scale. Pixels are integers, so each image contributes
a 256-bin histogram per channel and the dataset's sums are exact integers: mean and variance come
out correctly rounded, with no cancellation and independent of image order and worker count.

``sha256`` streams, in id order over the train and val rows, each row's split, id, label and the
stored bytes the output manifest points at (a file or a shard row), after the decode mode: it
changes exactly when the data a model can be trained or selected on changes.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from math import sqrt
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from dml.data.config import PreprocessConfig
from dml.data.decode import LOSSLESS, decode, encode, read_bytes, resize_shorter
from dml.data.manifest import IMAGE_ROOT_KEY, MANIFEST_NAME, SPLITS, image_root, is_packed, read_manifest, write_manifest
from dml.data.shards import ShardFile, ShardWriter, decode_stored, open_shards
from dml.data.stats import STATS_NAME, Stats, save_stats
from dml.errors import DatasetError
from dml.io import atomic_dir

HASHED_SPLITS = ("train", "val", "source")  # the data a model is (pre)trained and selected on
_LEVELS = range(256)


@dataclass(frozen=True)
class Job:
    """One manifest row's work: read its image (a file, or row ``row`` of a prepared shard);
    with ``cache``, resize and encode it for the output shards."""

    source: Path | ShardFile
    row: int
    image_id: int
    cache: bool
    pixels: bool  # its pixels enter the statistics (train rows)
    hashed: bool  # its bytes enter sha256 (train and val rows)

    def stored(self, channels: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """The stored bytes and the function that decodes them in the dataset's mode."""
        if isinstance(self.source, Path):
            path = self.source
            return read_bytes(path), lambda data: decode(data, channels, path)
        data, encoding, shape = self.source.stored(self.row, self.image_id)
        where = f"{self.source.path} row {self.row}"
        return data, lambda stored: decode_stored(stored, encoding, shape, channels, where)


@dataclass(frozen=True)
class Done:
    data: torch.Tensor | None  # the output bytes: the cached image (to pack), or the stored bytes of a hashed row
    shape: tuple[int, int, int] | None  # the cached image's shape
    histogram: torch.Tensor | None  # (channels, 256) int64 pixel counts, only for train rows


class PixelStats:
    """Exact per-channel mean / std of uint8 images from summed 256-bin histograms."""

    def __init__(self, channels: int) -> None:
        self.histogram = torch.zeros(channels, 256, dtype=torch.int64)

    def add(self, histogram: torch.Tensor) -> None:
        self.histogram += histogram

    def mean_std(self) -> tuple[list[float], list[float]]:
        means, stds = [], []
        for counts in self.histogram.tolist():  # Python ints: no overflow, no rounding
            n = sum(counts)
            s = sum(c * v for c, v in zip(counts, _LEVELS))
            q = sum(c * v * v for c, v in zip(counts, _LEVELS))
            means.append(s / n)
            stds.append(sqrt(Fraction(n * q - s * s, n * n)))
        return means, stds


def channel_histogram(image: torch.Tensor) -> torch.Tensor:
    """(channels, 256) int64 counts of each pixel value per channel."""
    return torch.stack([torch.bincount(plane.reshape(-1), minlength=256) for plane in image])


def _run(job: Job, cfg: PreprocessConfig) -> Done:
    data, decode_stored_bytes = job.stored(cfg.channels)
    shape = None
    if job.cache or job.pixels:
        image = decode_stored_bytes(data)
        if job.cache:
            image = resize_shorter(image, cfg.resize)
            shape = tuple(image.shape)
            data = encode(image, cfg.format, cfg.quality)
            if job.pixels and cfg.format not in LOSSLESS:
                image = decode(data, cfg.channels, f"image id {job.image_id} encoded as {cfg.format}")  # the pixels a loader will see
    histogram = channel_histogram(image) if job.pixels else None
    return Done(data if job.hashed or job.cache else None, shape, histogram)


def _ordered(pool: ThreadPoolExecutor, fn: Callable[[Job], Done], jobs: Iterable[Job], ahead: int) -> Iterator[Done]:
    """``map(fn, jobs)`` on the pool, results in job order, at most ``ahead`` jobs in flight (so
    results waiting for an earlier, slower job cannot pile up)."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Images are small: intra-op threads inside each worker only oversubscribe the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _relative_root(prepared: Path, manifest: pa.Table, out: Path) -> str:
    """The prepared images' folder as seen from ``out``: relative unless it was absolute."""
    value = (manifest.schema.metadata or {}).get(IMAGE_ROOT_KEY.encode(), b".").decode()
    if Path(value).is_absolute():
        return value
    return Path(os.path.relpath(os.path.normpath(image_root(manifest, prepared)), os.path.normpath(out))).as_posix()


@dataclass(frozen=True)
class Summary:
    split_images: dict[str, int]
    split_classes: dict[str, int]
    seconds: float
    bytes_written: int
    cached: bool

    def line(self) -> str:
        total = sum(self.split_images.values())
        splits = ", ".join(f"{s} {n} ({self.split_classes[s]} classes)" for s, n in self.split_images.items())
        rate = total / self.seconds if self.seconds > 0 else float("inf")
        cache = "resize cache" if self.cached else "no cache"
        return (f"preprocessed {total} images: {splits}; {self.seconds:.1f} s, {rate:.0f} images/s, "
                f"{self.bytes_written / 1e6:.1f} MB written ({cache})")


def build_preprocessed(prepared: Path, out: Path, cfg: PreprocessConfig, progress: bool = True) -> Summary:
    """Write ``out`` (atomically: a failure leaves the previous version) from the manifest in
    ``prepared``; see the module docstring."""
    started = time.perf_counter()
    prepared, out = Path(prepared), Path(out)
    manifest = read_manifest(prepared)
    ids = manifest.column("id").to_numpy()
    labels = manifest.column("label").to_numpy()
    splits = np.asarray(manifest.column("split").to_pylist())
    sources = image_root(manifest, prepared)
    source_paths = manifest.column("path").to_pylist()
    if not (splits == "train").any():
        raise DatasetError(f"{prepared / MANIFEST_NAME}: no 'train' images to compute the statistics on")
    metadata = {k.decode(): v.decode() for k, v in (manifest.schema.metadata or {}).items()}
    stats = PixelStats(cfg.channels)
    digest = hashlib.sha256(f"dml preprocess, channels={cfg.channels}\n".encode())
    written = 0
    packed = is_packed(manifest)
    source_shards = manifest.column("shard").to_pylist() if packed else None
    shards, shard_of_row = open_shards(sources, source_shards) if packed else ((), None)
    source_rows = manifest.column("row").to_pylist() if packed else None
    columns = {name: manifest.column(name).to_pylist() for name in ("id", "label", "class_name", "split", "path")}
    cache = cfg.resize is not None

    def job(r: int) -> Job:
        source = shards[shard_of_row[r]] if packed else sources / source_paths[r]
        return Job(source, source_rows[r] if packed else -1, int(ids[r]), cache,
                   pixels=bool(splits[r] == "train"), hashed=splits[r] in HASHED_SPLITS)

    with atomic_dir(out) as root:
        if cache:
            metadata[IMAGE_ROOT_KEY] = "."
            columns["shard"], columns["row"] = [""] * len(ids), [0] * len(ids)
        else:
            metadata[IMAGE_ROOT_KEY] = _relative_root(prepared, manifest, out)
            if packed:
                columns["shard"], columns["row"] = source_shards, source_rows
        rows = [int(r) for r in np.argsort(ids, kind="stable")
                if cache or splits[r] in HASHED_SPLITS]  # without a cache, test rows need no work
        bar = tqdm(total=len(rows), unit="img", desc="preprocess", disable=not progress)
        with bar, _torch_threads(1), ThreadPoolExecutor(cfg.workers, thread_name_prefix="preprocess") as pool, \
                ShardWriter(root, cfg.format) if cache else nullcontext() as writer:
            try:
                for r, done in zip(rows, _ordered(pool, lambda job: _run(job, cfg), map(job, rows), ahead=4 * cfg.workers)):
                    bar.update()
                    if done.histogram is not None:
                        stats.add(done.histogram)
                    if cache:
                        columns["shard"][r], columns["row"][r] = writer.add(ids[r], done.data, done.shape)
                        written += len(done.data)
                    if done.data is not None and splits[r] in HASHED_SPLITS:
                        digest.update(f"{splits[r]}\0".encode() + struct.pack("<qqq", ids[r], labels[r], len(done.data)))
                        digest.update(done.data.numpy())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # no worker may still write into the folder
                raise
        write_manifest(root, columns, metadata)
        mean, std = stats.mean_std()
        save_stats(root, Stats(mean=mean, std=std, channels=cfg.channels, sha256=digest.hexdigest()))
        written += (root / MANIFEST_NAME).stat().st_size + (root / STATS_NAME).stat().st_size
    present = [s for s in SPLITS if (splits == s).any()]
    return Summary(
        split_images={s: int((splits == s).sum()) for s in present},
        split_classes={s: len(np.unique(labels[splits == s])) for s in present},
        seconds=time.perf_counter() - started,
        bytes_written=written,
        cached=cfg.resize is not None,
    )
