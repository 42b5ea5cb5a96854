"""Readers of the official dataset layouts: each turns a raw dataset folder into a
:class:`~dml.data.raw.RawDataset` (paths, labels, class names, splits), the one shape ``prepare`` validates and
writes as ``manifest.parquet``. Images are never copied or decoded here.

Splits follow the DML protocol (Roth et al. 2020), not the datasets' own classification splits:
CUB200 classes 1-100 train / 101-200 test, CARS196 classes 1-98 train / 99-196 test, SOP
``Ebay_train.txt`` / ``Ebay_test.txt``, In-Shop train / query / gallery from
``list_eval_partition.txt``. A generic folder of ``<class>/<image>`` files or a CSV/Parquet
manifest gets a seeded class-disjoint train/test split.

Readers are forgiving about *where* ``data.root`` points (the dataset folder itself or a folder up
to two levels above it, see :func:`~dml.data.raw.find_root`) and strict about *what* they read: a missing file,
a malformed line or an unknown id is one :class:`DatasetError` line naming the file.

This module maps ``data.name`` to its reader (``formats_benchmarks``, ``formats_generic``).
"""

from __future__ import annotations

from dml.data.formats_benchmarks import read_cars196, read_cub200, read_inshop, read_sop
from dml.data.formats_generic import read_imagefolder, read_manifest_file
from dml.data.raw import Reader

FORMATS: dict[str, Reader] = {
    "cub200": read_cub200,
    "cars196": read_cars196,
    "sop": read_sop,
    "inshop": read_inshop,
    "imagefolder": read_imagefolder,
    "manifest": read_manifest_file,
}
