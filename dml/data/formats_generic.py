"""Readers of layouts that are not a benchmark's: a ``<class>/<image>`` folder and a CSV/Parquet
manifest file, split by class with a seed unless the manifest has a split column."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dml.data.config import DataConfig
from dml.data.manifest import SPLITS
from dml.data.raw import RawDataset, class_disjoint_splits
from dml.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def _named_labels(names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Labels for string class names: the index of each name in their sorted order."""
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    return [index[name] for name in names], list(names)


def _image_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith("."))
    return found


def read_imagefolder(root: Path, cfg: DataConfig) -> RawDataset:
    """``<root>/<class>/<image>`` (nested folders inside a class allowed); split by class."""
    if not root.is_dir():
        raise DatasetError(f"data.root: {root} is not a folder (expected <root>/<class>/<image> folders)")
    paths, names = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in _image_files(folder):
            paths.append(file.relative_to(root).as_posix())
            names.append(folder.name)
    if not paths:
        extensions = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DatasetError(f"data.root: {root} has no <class>/<image> files ({extensions})")
    labels, class_names = _named_labels(names)
    return RawDataset(root, list(range(len(paths))), paths, labels, class_names, class_disjoint_splits(labels, cfg))


def _read_table(path: Path):
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DatasetError(f"data.root: {path} is not a file (expected a CSV or Parquet manifest with columns path,label[,split])")
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        return pyarrow.csv.read_csv(path, convert_options=pyarrow.csv.ConvertOptions(column_types={"path": pa.string(), "split": pa.string()}))
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path}: unreadable {'Parquet' if path.suffix.lower() == '.parquet' else 'CSV'} file ({str(err).splitlines()[0]})") from None


def read_manifest_file(root: Path, cfg: DataConfig) -> RawDataset:
    """A CSV/Parquet file with columns path,label[,split]: paths relative to the file's folder or
    absolute, labels integers or names; without split, a seeded class-disjoint split."""
    import pyarrow as pa

    table = _read_table(root)
    for column in ("path", "label"):
        if column not in table.column_names:
            raise DatasetError(f"{root}: no column {column!r} (expected columns path,label[,split]; found {','.join(table.column_names)})")
    for column in {"path", "label", "split"} & set(table.column_names):
        if table.column(column).null_count:
            raise DatasetError(f"{root}: column {column!r} has empty values")
    raw_paths = [os.path.normpath(p) for p in table.column("path").to_pylist()]
    label_type = table.schema.field("label").type
    if pa.types.is_integer(label_type):
        labels = [int(v) for v in table.column("label").to_pylist()]
        class_names = [str(v) for v in labels]
    else:
        labels, class_names = _named_labels([str(v) for v in table.column("label").to_pylist()])
    image_root = root.parent
    if any(os.path.isabs(p) for p in raw_paths):
        absolute = [p if os.path.isabs(p) else os.path.join(os.path.abspath(image_root), p) for p in raw_paths]
        image_root = Path(os.path.commonpath([os.path.dirname(p) for p in absolute]))
        raw_paths = [os.path.relpath(p, image_root) for p in absolute]
    if "split" in table.column_names:
        splits = [str(s).strip() for s in table.column("split").to_pylist()]
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise DatasetError(f"{root}: column 'split' has unknown value(s) {unknown}; expected {', '.join(SPLITS)}")
    else:
        splits = class_disjoint_splits(labels, cfg)
    paths = [Path(p).as_posix() for p in raw_paths]
    return RawDataset(image_root, list(range(len(paths))), paths, labels, class_names, splits)
