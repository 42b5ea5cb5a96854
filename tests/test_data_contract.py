"""The prepared-dataset contract and the preprocess stage: a valid manifest round-trips into
the arrays the model reads; a broken dataset fails with one line naming the file."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dml.config import parse_params
from dml.data.arrays import load_split, load_stats
from dml.data.manifest import read_manifest, write_manifest
from dml.embeddings import EmbeddingTable, read_embeddings, write_embeddings
from dml.errors import DatasetError
from dml.io import atomic_dir
from dml.paths import PREPARED, PREPROCESSED
from stages.preprocess import preprocess


def make_dataset(root, n_per_split: int = 3, size: int = 8):
    """Images whose pixels encode their id, so the round trip can be checked exactly."""
    (root / "img").mkdir(parents=True)
    columns = {"id": [], "path": [], "label": [], "class_name": [], "split": []}
    for i in range(2 * n_per_split):
        split = "train" if i < n_per_split else "test"
        Image.fromarray(np.full((size, size), 10 * i, dtype=np.uint8)).save(root / f"img/{i}.png")
        columns["id"].append(100 + i)
        columns["path"].append(f"img/{i}.png")
        columns["label"].append(i % 2 + (0 if split == "train" else 2))
        columns["class_name"].append(f"c{i % 2}")
        columns["split"].append(split)
    write_manifest(root, columns, {"name": "synthetic"})
    return columns


def test_preprocess_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / PREPARED)
    preprocess(parse_params({"preprocess": {"image_size": 8, "channels": 1}}))
    train = load_split(PREPROCESSED, "train")
    test = load_split(PREPROCESSED, "test")
    assert train.images.shape == (3, 1, 8, 8) and train.images.dtype == np.uint8
    assert train.ids.tolist() == [100, 101, 102] and test.ids.tolist() == [103, 104, 105]
    assert [int(img[0, 0, 0]) for img in test.images] == [30, 40, 50]
    stats = load_stats(PREPROCESSED)
    assert stats.mean == pytest.approx([10.0])  # mean of 0, 10, 20
    assert stats.std == pytest.approx([np.std([0, 10, 20])])


def test_preprocess_rgb_resize(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / PREPARED)
    preprocess(parse_params({"preprocess": {"image_size": 16, "channels": 3}}))
    assert load_split(PREPROCESSED, "train").images.shape == (3, 3, 16, 16)


def test_corrupt_image_names_the_file_and_keeps_previous_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / PREPARED)
    params = parse_params({"preprocess": {"image_size": 8}})
    preprocess(params)
    before = (tmp_path / PREPROCESSED / "train/images.npy").read_bytes()
    (tmp_path / PREPARED / "img/4.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"img/4.png: not an image file"):
        preprocess(params)
    assert (tmp_path / PREPROCESSED / "train/images.npy").read_bytes() == before
    assert not list(tmp_path.glob("data/.preprocessed.tmp-*"))


def test_missing_image_file(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "img/2.png").unlink()
    with pytest.raises(DatasetError, match=r"img/2.png: image listed in .*manifest.parquet is missing"):
        read_manifest(tmp_path)


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["label"]), "missing column(s) label"),
        (lambda t: t.set_column(0, "id", pa.array([1, 1, 2, 3, 4, 5], pa.int64())), "column 'id' has duplicate values"),
        (lambda t: t.set_column(4, "split", pa.array(["train"] * 5 + ["val"])), "unknown split value(s) ['val']"),
        (lambda t: t.set_column(2, "label", pa.array([str(i) for i in range(6)])), "column 'label' has type string, expected int64"),
    ],
)
def test_malformed_manifest(tmp_path, mutate, message):
    make_dataset(tmp_path)
    table = pq.read_table(tmp_path / "manifest.parquet")
    pq.write_table(mutate(table), tmp_path / "manifest.parquet")
    with pytest.raises(DatasetError) as info:
        read_manifest(tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_embeddings_parquet_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    table = EmbeddingTable(np.arange(5) + 7, np.array([0, 0, 1, 1, 2]), rng.normal(size=(5, 4)).astype(np.float32))
    write_embeddings(tmp_path / "e.parquet", table)
    schema = pq.read_schema(tmp_path / "e.parquet")
    assert schema.field("vector").type == pa.list_(pa.float32(), 4)
    back = read_embeddings(tmp_path / "e.parquet")
    assert np.array_equal(back.vectors, table.vectors) and back.ids.tolist() == table.ids.tolist()


def test_atomic_dir_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text(json.dumps(1))
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.json").write_text(json.dumps(2))
        raise RuntimeError("stage failed half-way")
    assert json.loads((target / "a.json").read_text()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
