"""The prepared-dataset contract: ``manifest.parquet`` with one row per image.

Columns: ``id`` (int64, unique), ``path`` (str, POSIX, relative to the image root),
``label`` (int64), ``class_name`` (str), ``split``: "train", "val" (classes held out of training
for model selection), and either "test" (all-vs-all retrieval) or "query" + "gallery" (In-Shop:
queries searched against the gallery); optionally "source" (classes in neither, that ``pretrain``
trains a classifier on). Every dataset, generated or read from an official format,
is prepared into this one shape, so everything downstream of ``prepare`` is dataset-agnostic.

The image root is the schema metadata key ``image_root``: a path, relative paths resolved
against the manifest's folder; absent or "." means the manifest's own folder (generated data).
A real dataset is not copied: its manifest points at the raw folder.

Packed images (dml/data/shards.py) add two columns: ``shard`` (the Arrow file, relative to the
image root) and ``row`` (the image's row in it); ``path`` then still names the image (its source
file, or ``<label>/<id>`` for generated data) but is not read.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dml.errors import DatasetError

MANIFEST_NAME = "manifest.parquet"
SPLITS = ("train", "val", "test", "query", "gallery", "source")
IMAGE_ROOT_KEY = "image_root"

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)
PACKED = (pa.field("shard", pa.string(), nullable=False), pa.field("row", pa.int64(), nullable=False))
PACKED_SCHEMA = pa.schema([*SCHEMA, *PACKED])


def is_packed(table: pa.Table) -> bool:
    """The manifest's images live in shards (columns ``shard`` and ``row``)."""
    return "shard" in table.column_names


def write_manifest(root: Path, columns: dict[str, list], metadata: dict[str, str]) -> Path:
    schema = PACKED_SCHEMA if "shard" in columns else SCHEMA
    table = pa.table(columns, schema=schema).replace_schema_metadata({k: str(v) for k, v in metadata.items()})
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
    packed = any(f.name in table.column_names for f in PACKED)
    fields = [*SCHEMA, *PACKED] if packed else list(SCHEMA)
    missing = [f.name for f in fields if f.name not in table.column_names]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {', '.join(missing)}"
                           + (" (packed images need both shard and row)" if packed else ""))
    for field in fields:
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
    present = set(table.column("split").to_pylist())
    if "test" in present and present & {"query", "gallery"}:
        raise DatasetError(f"{where}: splits mix 'test' with 'query'/'gallery'; use one evaluation protocol")
    if len(present & {"query", "gallery"}) == 1:
        raise DatasetError(f"{where}: a 'query' split needs a 'gallery' split and vice versa")
    if check_files and packed:
        images = image_root(table, root)
        for rel in sorted(set(table.column("shard").to_pylist())):
            if not (images / rel).is_file():
                raise DatasetError(f"{images / rel}: image shard listed in {where} is missing")
    elif check_files:
        images = image_root(table, root)
        for rel in table.column("path").to_pylist():
            if not (images / rel).is_file():
                raise DatasetError(f"{images / rel}: image listed in {where} is missing")


def image_root(table: pa.Table, manifest_dir: Path) -> Path:
    """The folder the manifest's ``path`` column is relative to (see the module docstring)."""
    metadata = table.schema.metadata or {}
    value = metadata.get(IMAGE_ROOT_KEY.encode(), b".").decode()
    return Path(manifest_dir) / value  # an absolute value replaces manifest_dir


def evaluation_splits(table: pa.Table) -> tuple[str, ...]:
    """("query", "gallery") for a query/gallery dataset, else ("test",)."""
    present = set(table.column("split").to_pylist())
    return ("query", "gallery") if "query" in present else ("test",)
