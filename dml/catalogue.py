"""The dataset behind embedding ids: each id's image (a file, or a row of a packed shard),
label and class name, read from the manifest, for the captions and thumbnails of galleries and
the query command's results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image

from dml.data.manifest import image_root, is_packed
from dml.data.shards import ShardFile, open_shards
from dml.errors import DatasetError


@dataclass(frozen=True)
class Catalogue:
    """Image file, label and class name of each dataset id: what a thumbnail needs."""

    root: Path
    paths: list[str]
    labels: list[int]
    class_names: list[str]
    row_of_id: dict[int, int]
    id_of_path: dict[str, int]
    shards: list[ShardFile] | None = None  # packed: each row's shard file
    shard_rows: list[int] | None = None  # packed: each row's row in it

    @classmethod
    def from_manifest(cls, manifest: pa.Table, root: Path) -> Catalogue:
        ids = [int(i) for i in manifest.column("id").to_pylist()]
        paths = manifest.column("path").to_pylist()
        images = image_root(manifest, Path(root))
        shards = shard_rows = None
        if is_packed(manifest):
            files, shard_of_row = open_shards(images, manifest.column("shard").to_pylist())
            shards, shard_rows = [files[i] for i in shard_of_row.tolist()], manifest.column("row").to_pylist()
        return cls(
            root=images,
            paths=paths,
            labels=manifest.column("label").to_pylist(),
            class_names=manifest.column("class_name").to_pylist(),
            row_of_id={item_id: row for row, item_id in enumerate(ids)},
            id_of_path={} if shards else {Path(path).as_posix(): item_id for path, item_id in zip(paths, ids)},
            shards=shards,
            shard_rows=shard_rows,
        )

    def row(self, item_id: int) -> int:
        try:
            return self.row_of_id[int(item_id)]
        except KeyError:
            raise DatasetError(f"id {item_id} is in the embeddings but not in the manifest (rerun the pipeline)") from None

    def path(self, item_id: int) -> Path:
        """The image's file; for a packed image, its name (``path`` column) under the root."""
        return self.root / self.paths[self.row(item_id)]

    def name(self, item_id: int) -> str:
        """Where the image is, for a table: its file, or ``<shard file>#<row>`` when packed."""
        row = self.row(item_id)
        if self.shards is None or self.shard_rows is None:
            return str(self.root / self.paths[row])
        return f"{self.shards[row].path}#{self.shard_rows[row]}"

    def picture(self, item_id: int) -> Path | Image.Image:
        """What a thumbnail is drawn from: the image file, or a packed image's pixels."""
        row = self.row(item_id)
        if self.shards is None or self.shard_rows is None:
            return self.root / self.paths[row]
        pixels = self.shards[row].image(self.shard_rows[row], int(item_id), 3)
        return Image.fromarray(pixels.permute(1, 2, 0).numpy())

    def label(self, item_id: int) -> int:
        return self.labels[self.row(item_id)]

    def class_name(self, item_id: int) -> str:
        return self.class_names[self.row(item_id)]

    def id_of_file(self, path: Path) -> int | None:
        """The id of the dataset image stored at ``path``, None for a file from elsewhere (and for
        every file when the dataset is packed: its images are no files)."""
        try:
            relative = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        return self.id_of_path.get(relative.as_posix())
