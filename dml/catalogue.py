"""The dataset behind embedding ids: each id's image file, label and class name, read from the
manifest, for the captions and thumbnails of galleries and the query command's results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dml.data.manifest import image_root
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

    @classmethod
    def from_manifest(cls, manifest: pa.Table, root: Path) -> Catalogue:
        ids = [int(i) for i in manifest.column("id").to_pylist()]
        paths = manifest.column("path").to_pylist()
        return cls(
            root=image_root(manifest, Path(root)),
            paths=paths,
            labels=manifest.column("label").to_pylist(),
            class_names=manifest.column("class_name").to_pylist(),
            row_of_id={item_id: row for row, item_id in enumerate(ids)},
            id_of_path={Path(path).as_posix(): item_id for path, item_id in zip(paths, ids)},
        )

    def row(self, item_id: int) -> int:
        try:
            return self.row_of_id[int(item_id)]
        except KeyError:
            raise DatasetError(f"id {item_id} is in the embeddings but not in the manifest (rerun the pipeline)") from None

    def path(self, item_id: int) -> Path:
        return self.root / self.paths[self.row(item_id)]

    def label(self, item_id: int) -> int:
        return self.labels[self.row(item_id)]

    def class_name(self, item_id: int) -> str:
        return self.class_names[self.row(item_id)]

    def id_of_file(self, path: Path) -> int | None:
        """The id of the dataset image stored at ``path``, None for a file from elsewhere."""
        try:
            relative = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        return self.id_of_path.get(relative.as_posix())
