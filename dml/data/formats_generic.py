"""Readers of layouts that are not a benchmark's: a ``<class>/<image>`` folder and a CSV/Parquet
manifest file, split by class with a seed unless the manifest has a split column."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
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


def _image_files(folder: Path, real_root: Path) -> list[Path]:
    """The image files under ``folder``, sorted. Folder links inside it are not followed; a file
    link must lead inside the dataset root (one error line naming it otherwise)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                raise DatasetError(f"data.root: {path} is a link to {path.resolve()}, outside the dataset root "
                                   "(links are followed only inside it)")
            found.append(path)
    return found


def _unwrap(root: Path) -> Path:
    """``root``, or the folder it wraps (up to two levels down, as :func:`find_root`): a folder
    whose only entry is one folder without images of its own, the usual archive of
    ``photos/<class>/<image>``."""
    for _ in range(2):
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink() or any(
            p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in entries[0].iterdir()
        ):
            break
        root = entries[0]
    return root


def _class_folders(root: Path) -> list[Path]:
    """The class folders of ``root``. A folder link is followed only where it leads inside the
    dataset root and to no other class folder (nor into or around one): ``alias -> .`` or
    ``alias -> class_a`` would make the same images a second class. Such a link is one error line."""
    real_root = root.resolve()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    claimed = []
    for folder in folders:
        real = folder.resolve()
        if real == real_root or not real.is_relative_to(real_root):
            where = "the dataset root itself" if real == real_root else "outside the dataset root"
            raise DatasetError(f"data.root: class folder {folder} is a link to {where} ({real}); links are followed only "
                               "to folders inside it that are no other class")
        claimed.append((real.relative_to(real_root).parts, folder))
    claimed.sort()
    # A folder inside another sorts right after it (or after one that is inside it too).
    for (outer, first), (inner, second) in zip(claimed, claimed[1:]):
        if inner[: len(outer)] == outer:
            link = second if second.is_symlink() else first
            other = first if link is second else second
            where = "the same folder as" if inner == outer else "a folder inside or around"
            raise DatasetError(f"data.root: class folder {link} is a link to {where} class folder {other}; the same images "
                               "would be two classes")
    return folders


def read_imagefolder(root: Path, cfg: DataConfig) -> RawDataset:
    """``<root>/<class>/<image>`` (nested folders inside a class allowed); split by class. A root
    that only wraps such a folder (an archive's one top-level folder) is unwrapped."""
    if not root.is_dir():
        raise DatasetError(f"data.root: {root} is not a folder (expected <root>/<class>/<image> folders)")
    base = _unwrap(root)
    real_base = base.resolve()
    paths, names = [], []
    for folder in _class_folders(base):
        for file in _image_files(folder, real_base):
            paths.append(file.relative_to(base).as_posix())
            names.append(folder.name)
    if not paths:
        extensions = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DatasetError(f"data.root: {root} has no <class>/<image> files ({extensions})")
    if len(set(names)) < 2:
        raise DatasetError(f"data.root: {root} has images of one class only ({base / names[0]}); expected "
                           "<root>/<class>/<image> with two or more class folders")
    labels, class_names = _named_labels(names)
    return RawDataset(base, list(range(len(paths))), paths, labels, class_names, class_disjoint_splits(labels, cfg))


def _read_table(path: Path):
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DatasetError(f"data.root: {path} is not a file (expected a CSV or Parquet manifest with columns path,label[,split])")
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        text = {name: pa.string() for name in ("path", "label", "split")}  # labels as written: see _manifest_labels
        return pyarrow.csv.read_csv(path, convert_options=pyarrow.csv.ConvertOptions(column_types=text))
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path}: unreadable {'Parquet' if path.suffix.lower() == '.parquet' else 'CSV'} file ({str(err).splitlines()[0]})") from None


def _manifest_labels(texts: list[str], source: Path, row: Callable[[int], str]) -> tuple[list[int], list[str]]:
    """Labels as written, spaces trimmed: each distinct text is one class, named by it. When every
    label is an integer (``7``, ``-3``) it is the label number, else classes are numbered in the
    sorted order of their names. Refused, so that no class is made up or split by its spelling:
    an empty label, and one number written two ways (``0`` and ``0.0``, ``7`` and ``07``)."""
    texts = [t.strip() for t in texts]
    if "" in texts:
        raise DatasetError(f"{source}: {row(texts.index(''))}: empty label")
    spelled: dict[float, str] = {}
    for text in dict.fromkeys(texts):
        try:
            number = float(text)
        except ValueError:
            continue
        first = spelled.setdefault(number, text)
        if first != text:
            raise DatasetError(f"{source}: {row(texts.index(text))}: label {text!r} is the number of label {first!r} "
                               f"({row(texts.index(first))}) written another way; labels are compared as text, write each one way")
    if all(re.fullmatch(r"[+-]?\d+", t) for t in texts):
        return [int(t) for t in texts], texts
    return _named_labels(texts)


def read_manifest_file(root: Path, cfg: DataConfig) -> RawDataset:
    """A CSV/Parquet file with columns path,label[,split]: paths relative to the file's folder or
    absolute, labels integers or names (see :func:`_manifest_labels`); without split, a seeded
    class-disjoint split. Errors name the line (CSV) or row (Parquet)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _read_table(root)
    csv = root.suffix.lower() != ".parquet"

    def row(i: int) -> str:
        return f"line {i + 2}" if csv else f"row {i + 1}"  # CSV: after the header line

    for column in ("path", "label"):
        if column not in table.column_names:
            raise DatasetError(f"{root}: no column {column!r} (expected columns path,label[,split]; found {','.join(table.column_names)})")
    for column in ("path", "label", "split"):
        if column in table.column_names and table.column(column).null_count:
            raise DatasetError(f"{root}: {row(pc.index(table.column(column).is_null(), True).as_py())}: empty {column}")
    label_type = table.schema.field("label").type
    if not (pa.types.is_integer(label_type) or pa.types.is_string(label_type) or pa.types.is_large_string(label_type)):
        raise DatasetError(f"{root}: column 'label' has type {label_type}; expected integers or text")
    labels, class_names = _manifest_labels([str(v) for v in table.column("label").to_pylist()], root, row)
    raw = table.column("path").to_pylist()
    if any(not p.strip() for p in raw):
        raise DatasetError(f"{root}: {row(next(i for i, p in enumerate(raw) if not p.strip()))}: empty path")
    raw_paths = [os.path.normpath(p) for p in raw]
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
