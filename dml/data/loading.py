"""From a split to model input: image sources, torchvision ``transforms.v2``, and DataLoaders.

A split is an :class:`ImageSource`: :class:`ShardSplit` reads the rows of packed shards
(:mod:`dml.data.shards`: the resize cache, the glyphs), :class:`FileSplit` the preprocessed
manifest's files (a real dataset without a cache), both decoded as the preprocess stage decoded
them for its statistics (torchvision's libjpeg-turbo / libpng decoders, PIL for other formats);
:class:`ArraySplit` holds images in memory (small datasets, synthetic data in tests and benchmarks). Both give uint8 (C, H, W) tensors; the model
normalises (:class:`dml.models.base.EmbeddingModel`), so batches travel as uint8 (4x less to
copy to a GPU than float32).

Reproducible with any number of workers: the training batch sampler hands the dataset
``(index, seed)`` keys, and each image's augmentation runs right after the default CPU
generator is seeded with ``seed``. The seed is a function of (run seed, epoch,
step, position), never of which worker decodes the image, so 0, 1 or 8 workers give the same
batches, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset

from dml.data.config import TransformsConfig
from dml.data.decode import decode_file
from dml.data.manifest import SPLITS, image_root, is_packed, read_manifest
from dml.data.shards import ShardFile, open_shards
from dml.data.stats import load_stats
from dml.data.transforms import Shift, eval_transform, train_transform
from dml.errors import DatasetError

class BatchSampler(Protocol):
    """Any batch sampler (``dml/samplers``): ``len`` batches per epoch, drawn from ``rng``. Named
    here, not imported, so the data family needs nothing from the samplers."""

    def __len__(self) -> int: ...

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]: ...


class ImageSource(Protocol):
    """What a DataLoader reads: ``len`` images with labels and ids, each as uint8 (C, H, W)."""

    labels: np.ndarray
    ids: np.ndarray

    @property
    def channels(self) -> int: ...

    def __len__(self) -> int: ...

    def read(self, index: int) -> torch.Tensor: ...

    def subset(self, rows: np.ndarray) -> ImageSource: ...


@dataclass(frozen=True)
class ArraySplit:
    """Images held in memory as a uint8 (N, C, H, W) array (may be a read-only memmap)."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[index]))

    def subset(self, rows: np.ndarray) -> ArraySplit:
        return ArraySplit(np.asarray(self.images[rows]), self.labels[rows], self.ids[rows])


@dataclass(frozen=True)
class FileSplit:
    """Images read from files. Paths are a fixed-width bytes array, not a list of str: DataLoader
    workers fork, and reading Python objects touches their refcounts, which copies every page of
    a list of 60k strings into every worker (a numpy array's buffer is never written)."""

    root: Path
    paths: np.ndarray  # dtype "S": UTF-8 paths relative to root
    labels: np.ndarray
    ids: np.ndarray
    channels: int

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> Path:
        return self.root / self.paths[index].decode()

    def read(self, index: int) -> torch.Tensor:
        return decode_file(self.path(index), self.channels)

    def subset(self, rows: np.ndarray) -> FileSplit:
        return FileSplit(self.root, self.paths[rows], self.labels[rows], self.ids[rows], self.channels)


@dataclass(frozen=True)
class ShardSplit:
    """Images packed in shards: image ``i`` is row ``rows[i]`` of ``files[shard[i]]``, its id
    checked on every read. Only numpy arrays and lazily opened memory maps: cheap to fork."""

    files: tuple[ShardFile, ...]
    shard: np.ndarray  # int32 index into files
    rows: np.ndarray  # int64
    labels: np.ndarray
    ids: np.ndarray
    channels: int

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> torch.Tensor:
        return self.files[self.shard[index]].image(int(self.rows[index]), int(self.ids[index]), self.channels)

    def subset(self, rows: np.ndarray) -> ShardSplit:
        return ShardSplit(self.files, self.shard[rows], self.rows[rows], self.labels[rows], self.ids[rows], self.channels)


def load_splits(root: Path | str) -> dict[str, FileSplit | ShardSplit]:
    """Every split the preprocessed dataset at ``root`` has (manifest.parquet + stats.json, each
    read once), in the manifest contract's order: train, val, test / query, gallery."""
    root = Path(root)
    table = read_manifest(root, check_files=False)
    images, channels = image_root(table, root), load_stats(root).channels
    packed = is_packed(table)
    # shared by the splits: each file mapped once
    files, shard_of_row = open_shards(images, table.column("shard").to_pylist()) if packed else ((), None)
    splits: dict[str, FileSplit | ShardSplit] = {}
    for split in SPLITS:
        mask = pc.equal(table.column("split"), split)
        rows = table.filter(mask)
        if rows.num_rows and packed:
            splits[split] = ShardSplit(
                files=files,
                shard=shard_of_row[mask.to_numpy()],
                rows=rows.column("row").to_numpy().astype(np.int64),
                labels=rows.column("label").to_numpy().astype(np.int64),
                ids=rows.column("id").to_numpy().astype(np.int64),
                channels=channels,
            )
        elif rows.num_rows:
            splits[split] = FileSplit(
                root=images,
                paths=np.array([p.encode() for p in rows.column("path").to_pylist()], dtype=np.bytes_),
                labels=rows.column("label").to_numpy().astype(np.int64),
                ids=rows.column("id").to_numpy().astype(np.int64),
                channels=channels,
            )
    return splits


def load_split(root: Path | str, split: str) -> FileSplit | ShardSplit:
    """One split of the preprocessed dataset at ``root``."""
    splits = load_splits(root)
    if split not in splits:
        raise DatasetError(f"{root}: the manifest has no {split!r} images")
    return splits[split]


def in_memory(source: ImageSource, limit_mib: int) -> ImageSource:
    """A split whose decoded images all have one shape and fit in ``limit_mib`` MiB, decoded
    once (the same decoder) and held as an :class:`ArraySplit`: the same tensors every epoch,
    without re-reading thousands of tiny images. Anything else is streamed from its files or shards."""
    if isinstance(source, ArraySplit) or limit_mib <= 0:
        return source
    first = source.read(0)
    if first.numel() * len(source) > limit_mib * 2**20:
        return source
    images = np.empty((len(source), *first.shape), dtype=np.uint8)
    for index in range(len(source)):
        image = source.read(index) if index else first
        if image.shape != first.shape:
            return source  # images of several sizes: stream them
        images[index] = image.numpy()
    return ArraySplit(images, source.labels, source.ids)


class ImageDataset(Dataset):
    """``dataset[i]`` -> (image, i) with the eval transform; ``dataset[(i, seed)]`` -> the
    augmented image, its randomness drawn from ``seed`` alone."""

    def __init__(self, source: ImageSource, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.source.read(index)
        if seed is not None:
            # transforms.v2 draws from torch's default CPU generator; seeding it per image makes
            # the draws a function of the seed alone, in a worker or in the training process
            # (where nothing else draws from it during an epoch: miners and losses own generators).
            torch.default_generator.manual_seed(seed)
        return self.transform(image), index

    def __getitems__(self, keys: list) -> list[tuple[torch.Tensor, int]]:
        """A batch (the DataLoader's fetch): with the :class:`Shift` augmentation, each image's
        offsets are drawn from its own seed as in ``__getitem__`` and the batch is padded and
        cropped at once; anything else goes image by image."""
        if not isinstance(self.transform, Shift) or not all(isinstance(key, tuple) for key in keys):
            return [self[key] for key in keys]
        images, offsets = [], []
        for index, seed in keys:
            torch.default_generator.manual_seed(seed)
            images.append(self.transform.geometry(self.source.read(index)))
            offsets.append(self.transform.offsets())
        return list(zip(self.transform.apply(torch.stack(images), offsets), (index for index, _ in keys)))


class EpochBatches:
    """The batch sampler of the training DataLoader: the batch sampler's batches for the epoch
    set by :meth:`start`, each index paired with its augmentation seed. With ``world > 1`` this
    rank's contiguous slice of each global batch: every rank draws the same global batches, and
    an image's seed is that of its position in the global batch, so the slices together are
    exactly the one-process batch (dml/training/distributed.py)."""

    def __init__(self, sampler: BatchSampler, rank: int = 0, world: int = 1) -> None:
        self.sampler = sampler
        self.rank, self.world = rank, world
        self.rng: np.random.Generator | None = None
        self.seed = 0

    def start(self, rng: np.random.Generator, seed: int) -> None:
        self.rng, self.seed = rng, seed

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.rng is None:
            raise RuntimeError("EpochBatches.start(rng, seed) must be called before each epoch")
        rng, self.rng = self.rng, None  # one pass per start(): a second pass would replay nothing
        for step, batch in enumerate(self.sampler.epoch(rng)):
            base = self.seed + step * len(batch)
            keys = [(int(index), (base + position) % 2**63) for position, index in enumerate(batch)]
            share = len(keys) // self.world
            yield keys[self.rank * share : (self.rank + 1) * share]


def loader_options(num_workers: int, device: torch.device, prefetch_factor: int, persistent: bool) -> dict:
    """Worker, pinning and prefetch settings shared by the training and embedding loaders;
    ``persistent``: workers live across epochs (training), not past one pass (embedding)."""
    options: dict = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers > 0:
        options.update(persistent_workers=persistent, prefetch_factor=prefetch_factor)
    return options


def train_loader(
    source: ImageSource, cfg: TransformsConfig, batches: EpochBatches, device: torch.device, num_workers: int, prefetch_factor: int
) -> DataLoader:
    return DataLoader(ImageDataset(source, train_transform(cfg)), batch_sampler=batches,
                      **loader_options(num_workers, device, prefetch_factor, persistent=True))


def eval_loader(
    source: ImageSource, cfg: TransformsConfig, batch_size: int, device: torch.device, num_workers: int = 0, prefetch_factor: int = 2
) -> DataLoader:
    """In order, no augmentation (embedding passes: stages, storage refresh, monitoring)."""
    return DataLoader(ImageDataset(source, eval_transform(cfg)), batch_size=batch_size, shuffle=False,
                      **loader_options(num_workers, device, prefetch_factor, persistent=False))
