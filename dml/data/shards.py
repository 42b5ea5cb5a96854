"""Packed images: a dataset's images as a few large Arrow IPC files ("shards"), memory-mapped.

Tens of thousands of small image files cost a DVC status check, a push and a pull one object
each, and a loader one open() each; the fast loaders of the field (FFCV, WebDataset, MosaicML
streaming) read large contiguous files instead. A shard is an Arrow IPC *file* (random access:
its footer locates every record batch) under ``<root>/shards/`` with one row per image:

* ``id`` (int64): the manifest id, checked on every read (a stale or swapped shard fails loudly);
* ``channels``, ``height``, ``width`` (int32): the stored image's shape;
* ``data`` (binary): the encoded file bytes (``encoding`` png / jpeg / webp in the schema
  metadata) or, for small fixed-size images, the raw uint8 pixels in (C, H, W) order (``raw``:
  no decoding at all).

A new file starts once a file holds ``max_bytes`` of image data, so any dataset is a handful of
files of bounded size. Files are opened memory-mapped and only the requested row's bytes are
read, so the class-balanced and embedded samplers keep random access and memory stays flat in
the dataset size. The manifest joins a row to its image with the columns ``shard`` (the file,
relative to the image root) and ``row`` (dml/data/manifest.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from dml.data.decode import decode, match_channels
from dml.errors import DatasetError

SHARD_DIR = "shards"
ENCODINGS = ("raw", "png", "jpeg", "webp")
MAX_SHARD_BYTES = 256 * 2**20
ROWS_PER_BATCH = 1024
REBUILD = "rerun `dvc repro` to rebuild it"

SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("channels", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("data", pa.binary(), nullable=False),
])


def shard_name(index: int) -> str:
    return f"{SHARD_DIR}/{index:05d}.arrow"


class ShardWriter:
    """Appends images, in the order given, to ``root/shards/00000.arrow``, ``00001.arrow``, ...
    :meth:`add` returns each image's (shard, row). The caller writes inside an atomic folder
    (:func:`dml.io.atomic_dir`), so a failed run leaves no half-written shard behind."""

    def __init__(self, root: Path, encoding: str, max_bytes: int = MAX_SHARD_BYTES) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"shard encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.root, self.max_bytes = Path(root), max_bytes
        self.schema = SCHEMA.with_metadata({"encoding": encoding})
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.index, self.rows, self.bytes = -1, 0, 0
        self.writer: pa.ipc.RecordBatchFileWriter | None = None
        self.pending: dict[str, list] = {name: [] for name in SCHEMA.names}

    def add(self, image_id: int, data: bytes | np.ndarray | torch.Tensor, shape: tuple[int, int, int]) -> tuple[str, int]:
        payload = data.numpy().tobytes() if isinstance(data, torch.Tensor) else bytes(data)
        if self.writer is None or self.bytes >= self.max_bytes:
            self._next_file()
        for name, value in zip(SCHEMA.names, (int(image_id), *map(int, shape), payload)):
            self.pending[name].append(value)
        self.bytes += len(payload)
        row = self.rows
        self.rows += 1
        if len(self.pending["id"]) >= ROWS_PER_BATCH:
            self._flush()
        return shard_name(self.index), row

    def _flush(self) -> None:
        if self.pending["id"] and self.writer is not None:
            self.writer.write_batch(pa.record_batch([pa.array(self.pending[f.name], f.type) for f in SCHEMA], schema=self.schema))
            self.pending = {name: [] for name in SCHEMA.names}

    def _next_file(self) -> None:
        self.close()
        self.index, self.rows, self.bytes = self.index + 1, 0, 0
        self.writer = pa.ipc.new_file(str(self.root / shard_name(self.index)), self.schema)

    def close(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()
            self.writer = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Opened:
    """One shard's columns as numpy views of the memory map (nothing copied)."""

    encoding: str
    starts: np.ndarray  # first row of each record batch
    ids: np.ndarray
    shapes: np.ndarray  # (rows, 3) channels, height, width
    offsets: list[np.ndarray]  # per record batch: the data column's offsets
    data: list[np.ndarray]  # per record batch: the data column's bytes
    keep: object  # the Arrow table, which owns the memory map


@dataclass
class ShardFile:
    """One shard, opened lazily once per process (DataLoader workers open their own map)."""

    path: Path
    _opened: _Opened | None = field(default=None, repr=False)
    _pid: int = field(default=-1, repr=False)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_opened": None, "_pid": -1}

    def opened(self) -> _Opened:
        if self._opened is None or self._pid != os.getpid():
            self._opened, self._pid = self._open(), os.getpid()
        return self._opened

    def _open(self) -> _Opened:
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: image shard is missing; {REBUILD}")
        try:
            table = pa.ipc.open_file(pa.memory_map(str(self.path), "r")).read_all()
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
            raise DatasetError(f"{self.path}: unreadable or truncated image shard ({str(err).splitlines()[0][:120]}); {REBUILD}") from None
        if table.schema.remove_metadata() != SCHEMA:
            raise DatasetError(f"{self.path}: not an image shard (columns {table.schema.names}); {REBUILD}")
        encoding = (table.schema.metadata or {}).get(b"encoding", b"").decode()
        if encoding not in ENCODINGS:
            raise DatasetError(f"{self.path}: unknown shard encoding {encoding!r}; {REBUILD}")
        chunks = table.column("data").chunks
        offsets, data = [], []
        for chunk in chunks:
            _, offset_buffer, data_buffer = chunk.buffers()
            offsets.append(np.frombuffer(offset_buffer, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1])
            data.append(np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8))
        starts = np.cumsum([0] + [len(c) for c in chunks])[:-1]
        shapes = np.stack([table.column(name).to_numpy() for name in ("channels", "height", "width")], axis=1)
        return _Opened(encoding, starts, table.column("id").to_numpy(), shapes, offsets, data, table)

    def __len__(self) -> int:
        return len(self.opened().ids)

    def stored(self, row: int, image_id: int | None = None) -> tuple[torch.Tensor, str, tuple[int, int, int]]:
        """The row's stored bytes (1-D uint8, a copy), the encoding and the stored shape; with
        ``image_id``, checked to be that image's row."""
        shard = self.opened()
        if not 0 <= row < len(shard.ids):
            raise DatasetError(f"{self.path}: row {row} out of range ({len(shard.ids)} rows); {REBUILD}")
        if image_id is not None and int(shard.ids[row]) != image_id:
            raise DatasetError(f"{self.path}: row {row} holds image id {int(shard.ids[row])}, the manifest says {image_id}; {REBUILD}")
        batch = int(np.searchsorted(shard.starts, row, side="right")) - 1
        at = row - int(shard.starts[batch])
        begin, end = shard.offsets[batch][at], shard.offsets[batch][at + 1]
        shape = tuple(int(v) for v in shard.shapes[row])
        return torch.from_numpy(shard.data[batch][begin:end].copy()), shard.encoding, shape  # type: ignore[return-value]


    def image(self, row: int, image_id: int | None, channels: int) -> torch.Tensor:
        """The row's image as uint8 (channels, H, W), decoded as a file would be."""
        data, encoding, shape = self.stored(row, image_id)
        return decode_stored(data, encoding, shape, channels, f"{self.path} row {row}")


def decode_stored(data: torch.Tensor, encoding: str, shape: tuple[int, int, int], channels: int, where: str) -> torch.Tensor:
    """Stored bytes -> uint8 (channels, H, W): raw pixels reshaped, encoded ones decoded
    (:func:`dml.data.decode.decode`); ``where`` names the row in errors."""
    if encoding != "raw":
        return decode(data, channels, where)
    if data.numel() != shape[0] * shape[1] * shape[2]:
        raise DatasetError(f"{where}: {data.numel()} bytes of pixels for shape {shape} (corrupt shard); {REBUILD}")
    return match_channels(data.reshape(shape), channels)


def open_shards(root: Path, names: list[str]) -> tuple[tuple[ShardFile, ...], np.ndarray]:
    """The shards a manifest's ``shard`` column names (relative to ``root``), each opened once
    (lazily), and each row's index into them."""
    unique, index = np.unique(np.array(names, dtype=str), return_inverse=True)
    return tuple(ShardFile(Path(root) / name) for name in unique.tolist()), index.astype(np.int32)
