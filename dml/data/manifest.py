"""The prepared-dataset contract: ``manifest.parquet`` with one row per image.

Columns: ``id`` (int64, unique), ``path`` (str, relative to the manifest's folder),
``label`` (int64), ``class_name`` (str), ``split`` ("train" | "test"). Every dataset, generated
or read from an official format, is prepared into this one shape, so everything downstream of
``prepare`` is dataset-agnostic.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dml.errors import DatasetError

MANIFEST_NAME = "manifest.parquet"
SPLITS = ("train", "test")

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)


def write_manifest(root: Path, columns: dict[str, list], metadata: dict[str, str]) -> Path:
    table = pa.table(columns, schema=SCHEMA).replace_schema_metadata({k: str(v) for k, v in metadata.items()})
    validate_manifest(table, root, check_files=False)
    path = root / MANIFEST_NAME
    pq.write_table(table, path)
    return path


def read_manifest(root: Path, check_files: bool = True) -> pa.Table:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: manifest not found (run the prepare stage first)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path}: unreadable parquet file ({err})") from None
    validate_manifest(table, Path(root), check_files=check_files)
    return table


def validate_manifest(table: pa.Table, root: Path, check_files: bool = True) -> None:
    where = root / MANIFEST_NAME
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {', '.join(missing)}")
    for field in SCHEMA:
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise DatasetError(f"{where}: column {field.name!r} has type {actual}, expected {field.type}")
        if table.column(field.name).null_count:
            raise DatasetError(f"{where}: column {field.name!r} has null values")
    ids = table.column("id").to_numpy()
    if len(set(ids.tolist())) != len(ids):
        raise DatasetError(f"{where}: column 'id' has duplicate values")
    bad_splits = set(table.column("split").to_pylist()) - set(SPLITS)
    if bad_splits:
        raise DatasetError(f"{where}: unknown split value(s) {sorted(bad_splits)}; expected {SPLITS}")
    if check_files:
        for rel in table.column("path").to_pylist():
            if not (root / rel).is_file():
                raise DatasetError(f"{root / rel}: image listed in {where} is missing")
