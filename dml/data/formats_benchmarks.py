"""Readers of the four DML benchmarks' official layouts (CUB200, CARS196, SOP, In-Shop), with
the DML protocol's class splits (see dml/data/formats.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from dml.data.config import DataConfig
from dml.data.raw import RawDataset, find_root, read_rows
from dml.errors import DatasetError

CUB_TRAIN_CLASSES = 100  # classes 1-100 train, 101-200 test
CARS_TRAIN_CLASSES = 98  # classes 1-98 train, 99-196 test


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
