"""Miniature copies of the real datasets in their *official* layouts (same file names, same
annotation formats, same class-id rules), with a few tiny JPEGs per class, so that the readers
and the whole pipeline can be tested on every format without the real downloads.

Each ``write_*`` is deterministic (a fixed seed), takes well under two seconds, and returns the
dataset folder (the one holding the marker file). Images vary in size and aspect ratio; their
pixels encode nothing, only the annotation files carry labels. :func:`damage` turns a file into
each kind of bad or non-RGB image the validation must catch.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 30)


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Path:
    """A small noisy JPEG whose width/height vary with ``seed`` (three aspect ratios)."""
    rng = np.random.default_rng(seed)
    width, height = size[0] + 8 * (seed % 3), size[1] + 6 * (seed % 2)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None, quality=80)
    return path


def _per_class(per_class: int | tuple[int, ...], index: int) -> int:
    """Images of class ``index``: a number, or a tuple cycled over the classes (uneven classes)."""
    return per_class if isinstance(per_class, int) else per_class[index % len(per_class)]


def _lines(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(str(v) for v in row) + "\n" for row in rows))


def write_cub200(root: Path, classes: int = 200, per_class: int | tuple[int, ...] = 2, size: tuple[int, int] = SIZE) -> Path:
    """``root/CUB_200_2011`` with images.txt, image_class_labels.txt, classes.txt (and the
    protocol-irrelevant train_test_split.txt, bounding_boxes.txt); the lines of images.txt and
    image_class_labels.txt are in different shuffled orders, as a reader must join them by id."""
    base = Path(root) / "CUB_200_2011"
    names, images, labels = [], [], []
    for c in range(1, classes + 1):
        name = f"{c:03d}.Bird_{c}"
        names.append((c, name))
        for k in range(_per_class(per_class, c - 1)):
            image_id = len(images) + 1
            rel = f"{name}/Bird_{c}_{k:04d}_{image_id}.jpg"
            write_jpeg(base / "images" / rel, image_id, size)
            images.append((image_id, rel))
            labels.append((image_id, c))
    rng = np.random.default_rng(200)
    _lines(base / "images.txt", [images[i] for i in rng.permutation(len(images))])
    _lines(base / "image_class_labels.txt", [labels[i] for i in rng.permutation(len(labels))])
    _lines(base / "classes.txt", names)
    _lines(base / "train_test_split.txt", [(i, i % 2) for i, _ in images])
    _lines(base / "bounding_boxes.txt", [(i, 1.0, 1.0, 10.0, 8.0) for i, _ in images])
    return base


def write_cars196(root: Path, classes: int = 196, per_class: int | tuple[int, ...] = 2, size: tuple[int, int] = SIZE) -> Path:
    """``root`` with car_ims/NNNNNN.jpg (numbered in class order: image n of class c is
    ``cars_class_of(n)`` with the same per_class) and cars_annos.mat, whose ``annotations`` rows are
    shuffled (the file's order is not class order)."""
    import scipy.io

    base = Path(root)
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows = []
    for c in range(1, classes + 1):
        for _ in range(_per_class(per_class, c - 1)):
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            write_jpeg(base / rel, len(rows) + 1, size)
            rows.append((rel, 1, 2, 30, 20, c, len(rows) % 2))
    annotations = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(np.random.default_rng(196).permutation(len(rows))):
        annotations[0, i] = rows[row]
    class_names = np.array([f"Make Model {c} 2012" for c in range(1, classes + 1)], dtype=object).reshape(1, -1)
    scipy.io.savemat(base / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return base


def cars_class_of(image_number: int, per_class: int) -> int:
    """The class of ``car_ims/<image_number>.jpg`` in a :func:`write_cars196` miniature (int per_class)."""
    return (image_number - 1) // per_class + 1


SOP_SUPER = ["bicycle", "chair", "kettle"]


def write_sop(root: Path, train_classes: int = 6, test_classes: int = 6, per_class: int | tuple[int, ...] = (2, 3)) -> Path:
    """``root/Stanford_Online_Products`` with Ebay_train.txt / Ebay_test.txt / Ebay_info.txt
    (header lines, 1-based ids continuing from train into test) and ``<super>_final/`` images."""
    base = Path(root) / "Stanford_Online_Products"
    header = ("image_id", "class_id", "super_class_id", "path")
    files: dict[str, list] = {"train": [header], "test": [header]}
    image_id = 0
    for c in range(1, train_classes + test_classes + 1):
        super_id = (c - 1) % len(SOP_SUPER) + 1
        for k in range(_per_class(per_class, c - 1)):
            image_id += 1
            rel = f"{SOP_SUPER[super_id - 1]}_final/{100000 + c}_{k}.JPG"
            write_jpeg(base / rel, image_id)
            files["train" if c <= train_classes else "test"].append((image_id, c, super_id, rel))
    for split, rows in files.items():
        _lines(base / f"Ebay_{split}.txt", rows)
    _lines(base / "Ebay_info.txt", [header] + files["train"][1:] + files["test"][1:])
    return base


def write_inshop(root: Path, train_items: int = 4, eval_items: int = 4, per_item: int = 3) -> Path:
    """``root/In-shop Clothes Retrieval Benchmark`` with Eval/list_eval_partition.txt (count line,
    header, rows) and img/ beside Eval/ (the official release). Train items get ``per_item`` train
    images; each evaluation item one query image and ``per_item - 1`` gallery images. Item ids are
    not consecutive (as in the release: train and test items interleave)."""
    base = Path(root) / "In-shop Clothes Retrieval Benchmark"
    rows = []
    for n in range(train_items + eval_items):
        item = f"id_{2 * n + 1:08d}"
        for k in range(per_item):
            rel = f"img/{'WOMEN' if n % 2 else 'MEN'}/Dresses/{item}/{k + 1:02d}_1_front.jpg"
            write_jpeg(base / rel, len(rows) + 1)
            status = "train" if n < train_items else ("query" if k == 0 else "gallery")
            rows.append((rel, item, status))
    _lines(base / "Eval" / "list_eval_partition.txt", [(len(rows),), ("image_name", "item_id", "evaluation_status"), *rows])
    return base


def write_imagefolder(root: Path, classes: int = 6, per_class: int = 3) -> Path:
    """``root/<class>/<image>`` with mixed extensions (jpg, JPEG, png), a nested folder, and a
    text file that is not an image (ignored)."""
    base = Path(root)
    for c in range(classes):
        folder = base / f"class_{chr(ord('a') + c)}"
        for k in range(per_class):
            name = ["img{}.jpg", "IMG{}.JPEG", "sub/img{}.png"][k % 3].format(k)
            write_jpeg(folder / name, c * 100 + k)
        (folder / "notes.txt").write_text("not an image\n")
    return base


def write_manifest_file(root: Path, fmt: str = "csv", classes: int = 6, per_class: int = 3, split: bool = False,
                        string_labels: bool = True) -> Path:
    """``root/images/...`` and ``root/list.<fmt>`` with columns path,label[,split]; with ``split``,
    the first half of the classes train and the rest test."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    base = Path(root)
    columns: dict[str, list] = {"path": [], "label": []}
    if split:
        columns["split"] = []
    for c in range(classes):
        for k in range(per_class):
            rel = f"images/{c}/{k}.jpg"
            write_jpeg(base / rel, c * 10 + k)
            columns["path"].append(rel)
            columns["label"].append(f"kind_{c}" if string_labels else c)
            if split:
                columns["split"].append("train" if c < classes // 2 else "test")
    table = pa.table(columns)
    path = base / f"list.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        pyarrow.csv.write_csv(table, path)
    return path


# --------------------------------------------------------------------------------------------
# Damage and archives
# --------------------------------------------------------------------------------------------

DAMAGE = ("missing", "corrupt", "truncated", "truncated_tail", "empty", "grayscale", "cmyk", "palette", "rgba")


def damage(path: Path, how: str) -> None:
    """Make the JPEG at ``path``: missing, corrupt (not an image), truncated (half its bytes),
    truncated_tail (only the end-of-image marker lost), empty, or a valid image in a non-RGB mode
    (grayscale, cmyk JPEG; palette, rgba PNG bytes under the same name)."""
    path = Path(path)
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "corrupt":
        path.write_bytes(b"this is not an image" * 10)
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "truncated_tail":
        path.write_bytes(data[:-2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how in ("grayscale", "cmyk", "palette", "rgba"):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        mode, fmt = {"grayscale": ("L", "JPEG"), "cmyk": ("CMYK", "JPEG"), "palette": ("P", "PNG"), "rgba": ("RGBA", "PNG")}[how]
        image.convert(mode).save(path, format=fmt)
    else:
        raise ValueError(f"unknown damage {how!r}; one of {DAMAGE}")


def make_archive(folder: Path, archive: Path) -> Path:
    """``folder`` (and everything in it) packed as ``archive`` (.tgz / .tar.gz / .tar / .zip), the
    folder's name the top-level entry, as in the official downloads."""
    folder, archive = Path(folder), Path(archive)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, path.relative_to(folder.parent).as_posix())
    else:
        mode = "w:gz" if archive.name.endswith((".tgz", ".tar.gz")) else "w"
        with tarfile.open(archive, mode) as tar:
            tar.add(folder, arcname=folder.name)
    return archive


def write_cub200_glyphs(root: Path, per_class: int = 8, size: int = 40) -> Path:
    """The CUB_200_2011 layout filled with *learnable* content: 200 glyph classes (the generated
    benchmark, upscaled to ``size`` px RGB JPEGs) as the 200 bird classes, so a pipeline run on
    it can show learning on the 100 unseen test classes. Class ids follow the glyph generator's
    shuffled class order."""
    from dml.data.glyphs import generate_glyphs

    glyphs = generate_glyphs(seed=0, samples_per_class=per_class, max_classes=200)
    base = Path(root) / "CUB_200_2011"
    images, labels = [], []
    for image_id, (pixels, label) in enumerate(zip(glyphs.images, glyphs.labels), start=1):
        rel = f"{label + 1:03d}.Glyph_{label + 1}/Glyph_{image_id:05d}.jpg"
        (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(base / "images" / rel, quality=90)
        images.append((image_id, rel))
        labels.append((image_id, int(label) + 1))
    _lines(base / "images.txt", images)
    _lines(base / "image_class_labels.txt", labels)
    _lines(base / "classes.txt", [(c, f"{c:03d}.Glyph_{c}") for c in range(1, 201)])
    return base
