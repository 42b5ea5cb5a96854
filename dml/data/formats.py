"""Readers of the official dataset layouts: each turns a raw dataset folder into a
:class:`RawDataset` (paths, labels, class names, splits), the one shape ``prepare`` validates and
writes as ``manifest.parquet``. Images are never copied or decoded here.

Splits follow the DML protocol (Roth et al. 2020), not the datasets' own classification splits:
CUB200 classes 1-100 train / 101-200 test, CARS196 classes 1-98 train / 99-196 test, SOP
``Ebay_train.txt`` / ``Ebay_test.txt``, In-Shop train / query / gallery from
``list_eval_partition.txt``. A generic folder of ``<class>/<image>`` files or a CSV/Parquet
manifest gets a seeded class-disjoint train/test split.

Readers are forgiving about *where* ``data.root`` points (the dataset folder itself or a folder up
to two levels above it, see :func:`find_root`) and strict about *what* they read: a missing file,
a malformed line or an unknown id is one :class:`DatasetError` line naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dml.data.config import DataConfig
from dml.data.manifest import SPLITS
from dml.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
CUB_TRAIN_CLASSES = 100  # classes 1-100 train, 101-200 test
CARS_TRAIN_CLASSES = 98  # classes 1-98 train, 99-196 test

# Salts of the seeded class splits, so that the train/test and the val draws of one data.seed are
# independent streams.
_TEST_SALT, _VAL_SALT = 0, 1


@dataclass(frozen=True)
class RawDataset:
    """One row per image, parallel lists. ``paths`` are POSIX, relative to ``image_root``;
    ``class_names[i]`` names ``labels[i]`` (the same name for every row of a label)."""

    image_root: Path
    ids: list[int]
    paths: list[str]
    labels: list[int]
    class_names: list[str]
    splits: list[str]

    def __post_init__(self) -> None:
        lengths = {len(self.ids), len(self.paths), len(self.labels), len(self.class_names), len(self.splits)}
        if len(lengths) != 1:
            raise ValueError(f"RawDataset columns have different lengths {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: Sequence[int]) -> RawDataset:
        """The dataset restricted to ``rows`` (in that order)."""
        return dataclasses.replace(
            self, **{name: [getattr(self, name)[i] for i in rows] for name in ("ids", "paths", "labels", "class_names", "splits")}
        )

    def with_splits(self, splits: list[str]) -> RawDataset:
        return dataclasses.replace(self, splits=splits)


Reader = Callable[[Path, DataConfig], RawDataset]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def find_root(root: Path, marker: str, shown: str, expected: str) -> Path:
    """The folder holding the file ``marker``: ``root`` itself, else a folder one, else two levels
    below (users point data.root at the dataset folder or at a folder that contains it). Errors
    read "data.root: <root> has no <shown> (expected <expected>)"."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DatasetError(f"data.root: {root} {what} (expected {expected})")
    for pattern in (marker, f"*/{marker}", f"*/*/{marker}"):
        found = sorted(p.parent for p in root.glob(pattern) if p.is_file() and not _hidden(p.relative_to(root)))
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(str(p) for p in found[:3])
            raise DatasetError(f"data.root: {root} holds several datasets ({listed}); point data.root at one of them")
    raise DatasetError(f"data.root: {root} has no {shown} (expected {expected})")


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts[:-1])


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (a file of the official layout)")
    return path


def read_rows(path: Path, columns: int, skip: int = 0) -> list[list[str]]:
    """The whitespace-separated rows of a text annotation file, each split into exactly
    ``columns`` fields (the last one keeps any inner spaces); blank lines are ignored."""
    rows = []
    with open(_need(path), encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip or not line.strip():
                continue
            fields = line.split(None, columns - 1)
            if len(fields) != columns:
                raise DatasetError(f"{path}: line {number} has {len(fields)} field(s), expected {columns}: {line.strip()[:80]!r}")
            fields[-1] = fields[-1].rstrip()
            rows.append(fields)
    return rows


def _int(value: str, path: Path, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path}: {what} {value!r} is not an integer") from None


def _id_map(path: Path) -> dict[int, str]:
    """``{id: rest of line}`` of a CUB-style "id value" file; duplicate ids are an error."""
    out: dict[int, str] = {}
    for image_id, value in read_rows(path, 2):
        key = _int(image_id, path, "id")
        if key in out:
            raise DatasetError(f"{path}: id {key} is listed twice")
        out[key] = value
    return out


def split_classes(classes: Sequence, fraction: float, seed: int, salt: int) -> set:
    """A seeded share of ``classes``: shuffle their sorted order with ``(seed, salt)`` and take the
    first ``round(fraction * n)`` (at least one, and one fewer than all when there are two or more)."""
    ordered = sorted(set(classes))
    if not ordered or fraction <= 0:
        return set()
    count = min(max(round(fraction * len(ordered)), 1), max(len(ordered) - 1, 1))
    order = np.random.default_rng([seed, salt]).permutation(len(ordered))
    return {ordered[i] for i in order[:count]}


def class_disjoint_splits(labels: Sequence[int], cfg: DataConfig) -> list[str]:
    """train/test by class for layouts without splits: ``train_fraction`` of the classes train."""
    train = split_classes(labels, cfg.train_fraction, cfg.seed, _TEST_SALT)
    return ["train" if label in train else "test" for label in labels]


def hold_out_val(dataset: RawDataset, fraction: float, seed: int) -> RawDataset:
    """Move a seeded ``fraction`` of the train classes, all their images, into split "val"."""
    train_labels = [label for label, split in zip(dataset.labels, dataset.splits) if split == "train"]
    val = split_classes(train_labels, fraction, seed, _VAL_SALT)
    if not val:
        return dataset
    if len(set(train_labels)) < 2:
        raise DatasetError(f"data.val_classes: the train split has {len(set(train_labels))} class; val needs another one")
    return dataset.with_splits(["val" if s == "train" and y in val else s for s, y in zip(dataset.splits, dataset.labels)])


def _named_labels(names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Labels for string class names: the index of each name in their sorted order."""
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    return [index[name] for name in names], list(names)


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def read_cub200(root: Path, cfg: DataConfig) -> RawDataset:
    """CUB_200_2011: images.txt, image_class_labels.txt and classes.txt joined by id."""
    base = find_root(root, "images.txt", "CUB_200_2011/images.txt", "the extracted CUB_200_2011 folder or the folder containing it")
    images = _id_map(base / "images.txt")
    classes_of = _id_map(base / "image_class_labels.txt")
    names = _id_map(base / "classes.txt")
    ids, paths, labels, class_names = [], [], [], []
    for image_id in sorted(images):
        if image_id not in classes_of:
            raise DatasetError(f"{base / 'image_class_labels.txt'}: no class for image id {image_id} of images.txt")
        label = _int(classes_of[image_id], base / "image_class_labels.txt", "class id")
        if label not in names:
            raise DatasetError(f"{base / 'classes.txt'}: no class {label} (image id {image_id})")
        ids.append(image_id)
        paths.append(f"images/{images[image_id]}")
        labels.append(label)
        class_names.append(names[label])
    splits = ["train" if label <= CUB_TRAIN_CLASSES else "test" for label in labels]
    return RawDataset(base, ids, paths, labels, class_names, splits)


def read_cars196(root: Path, cfg: DataConfig) -> RawDataset:
    """Stanford Cars: car_ims/ and cars_annos.mat (MATLAB struct array ``annotations``)."""
    import scipy.io

    base = find_root(root, "cars_annos.mat", "cars_annos.mat", "the folder holding cars_annos.mat and car_ims/, or the folder containing it")
    path = base / "cars_annos.mat"
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except (ValueError, OSError, NotImplementedError) as err:
        raise DatasetError(f"{path}: not a readable MATLAB file ({err})") from None
    for key in ("annotations", "class_names"):
        if key not in mat:
            raise DatasetError(f"{path}: no variable {key!r}")
    annotations = np.atleast_1d(mat["annotations"])
    fields = annotations.dtype.names or ()
    for field in ("relative_im_path", "class"):
        if field not in fields:
            raise DatasetError(f"{path}: annotations have no field {field!r} (fields: {', '.join(fields)})")
    class_names = [str(name).strip() for name in np.atleast_1d(mat["class_names"])]
    paths, labels = [], []
    for row, annotation in enumerate(annotations):
        label = int(annotation["class"])
        if not 1 <= label <= len(class_names):
            raise DatasetError(f"{path}: annotation {row + 1} has class {label}, outside 1..{len(class_names)}")
        paths.append(str(annotation["relative_im_path"]).strip())
        labels.append(label)
    splits = ["train" if label <= CARS_TRAIN_CLASSES else "test" for label in labels]
    return RawDataset(base, list(range(len(paths))), paths, labels, [class_names[y - 1] for y in labels], splits)


SOP_HEADER = ["image_id", "class_id", "super_class_id", "path"]


def read_sop(root: Path, cfg: DataConfig) -> RawDataset:
    """Stanford Online Products: Ebay_train.txt and Ebay_test.txt (header line, 1-based ids)."""
    base = find_root(root, "Ebay_train.txt", "Stanford_Online_Products/Ebay_train.txt", "the extracted Stanford_Online_Products folder or the folder containing it")
    ids, paths, labels, splits = [], [], [], []
    for split in ("train", "test"):
        path = base / f"Ebay_{split}.txt"
        rows = read_rows(path, 4)
        if not rows or rows[0] != SOP_HEADER:
            raise DatasetError(f"{path}: first line must be the header {' '.join(SOP_HEADER)!r}")
        for image_id, class_id, _, rel in rows[1:]:
            ids.append(_int(image_id, path, "image_id"))
            labels.append(_int(class_id, path, "class_id"))
            paths.append(rel)
            splits.append(split)
    if len(set(ids)) != len(ids):
        repeated = next(i for i, n in Counter(ids).items() if n > 1)
        raise DatasetError(f"{base}: image_id {repeated} appears more than once in Ebay_train.txt / Ebay_test.txt")
    return RawDataset(base, ids, paths, labels, [str(label) for label in labels], splits)


INSHOP_HEADER = ["image_name", "item_id", "evaluation_status"]


def read_inshop(root: Path, cfg: DataConfig) -> RawDataset:
    """In-Shop Clothes: Eval/list_eval_partition.txt (count line, header, rows), images in img/."""
    marker_dir = find_root(
        root, "list_eval_partition.txt", "Eval/list_eval_partition.txt",
        "the In-shop Clothes Retrieval Benchmark folder or the folder containing it",
    )
    path = marker_dir / "list_eval_partition.txt"
    with open(path, encoding="utf-8") as handle:
        count, header = handle.readline().strip(), handle.readline().split()
    if header != INSHOP_HEADER:
        raise DatasetError(f"{path}: second line must be the header {' '.join(INSHOP_HEADER)!r}")
    rows = read_rows(path, 3, skip=2)
    if count != str(len(rows)):
        raise DatasetError(f"{path}: the first line says {count!r} images, the file lists {len(rows)}")
    paths, items, splits = [], [], []
    for name, item, status in rows:
        if status not in ("train", "query", "gallery"):
            raise DatasetError(f"{path}: evaluation_status {status!r} of {name} is not train, query or gallery")
        paths.append(name)
        items.append(item)
        splits.append(status)
    labels = [_int(item.removeprefix("id_"), path, "item_id") for item in items]
    # The official release keeps list_eval_partition.txt in Eval/ and the images (img/) beside Eval/
    # or inside Img/; the listed paths start with img/.
    candidates = [marker_dir, marker_dir.parent, marker_dir.parent / "Img", marker_dir / "Img"]
    first = paths[0] if paths else "img"
    image_root = next((c for c in candidates if (c / first).exists()), None)
    if image_root is None:
        image_root = next((c for c in candidates if (c / first.split("/")[0]).is_dir()), None)
    if image_root is None:
        raise DatasetError(f"{path}: no {first.split('/')[0]}/ folder next to it or one level up (extract Img/img.zip there)")
    return RawDataset(image_root, list(range(len(paths))), paths, labels, items, splits)


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


FORMATS: dict[str, Reader] = {
    "cub200": read_cub200,
    "cars196": read_cars196,
    "sop": read_sop,
    "inshop": read_inshop,
    "imagefolder": read_imagefolder,
    "manifest": read_manifest_file,
}
