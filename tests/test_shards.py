"""Packed image shards (dml/data/shards.py): what is written is what is read back (checked with
pyarrow's own reader and PIL as references), files stay bounded, reads are random access from a
memory map, and a damaged shard fails in one line naming the file and row."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from dml.config import parse_params
from dml.data.glyphs import generate_glyphs
from dml.data.loading import ShardSplit, in_memory, load_splits
from dml.data.manifest import read_manifest
from dml.data.shards import ShardFile, ShardWriter, shard_name
from dml.errors import DatasetError
from dml.paths import PREPARED, PREPROCESSED


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (5 + i % 4, 7 + i % 3), dtype=np.uint8) for i in range(n)]


def write_raw(root, pixels: list[np.ndarray], **kw) -> list[tuple[str, int]]:
    with ShardWriter(root, "raw", **kw) as writer:
        return [writer.add(100 + i, image, (1, *image.shape)) for i, image in enumerate(pixels)]


def test_raw_round_trip_matches_pyarrow_reading_the_same_rows(tmp_path):
    pixels = images(3000)  # more than one record batch
    where = write_raw(tmp_path, pixels)
    assert {name for name, _ in where} == {shard_name(0)} and [row for _, row in where] == list(range(3000))
    reference = pa.ipc.open_file(tmp_path / shard_name(0)).read_all()
    shard = ShardFile(tmp_path / shard_name(0))
    for row in (0, 1023, 1024, 2999):
        assert reference.column("id")[row].as_py() == 100 + row
        assert reference.column("data")[row].as_py() == pixels[row].tobytes()
        image = shard.image(row, 100 + row, channels=1)
        assert image.dtype == torch.uint8 and np.array_equal(image[0].numpy(), pixels[row])
    rgb = shard.image(7, 107, channels=3)  # gray stored, RGB asked: PIL's convert("RGB")
    assert np.array_equal(rgb.permute(1, 2, 0).numpy(), np.asarray(Image.fromarray(pixels[7]).convert("RGB")))


def test_files_are_bounded_and_rows_restart_per_file(tmp_path):
    pixels = [np.full((10, 10), i, np.uint8) for i in range(25)]  # 100 bytes each
    where = write_raw(tmp_path, pixels, max_bytes=1000)
    assert [name for name, _ in where] == [shard_name(i // 10) for i in range(25)]
    assert [row for _, row in where] == [i % 10 for i in range(25)]
    for i, (name, row) in enumerate(where):
        assert int(ShardFile(tmp_path / name).image(row, 100 + i, 1)[0, 0, 0]) == i


def test_encoded_rows_decode_like_pil(tmp_path):
    pixels = images(4, seed=1)
    with ShardWriter(tmp_path, "png") as writer:
        for i, image in enumerate(pixels):
            writer.add(i, png_bytes(image), (1, *image.shape))
    shard = ShardFile(tmp_path / shard_name(0))
    for i, image in enumerate(pixels):
        assert np.array_equal(shard.image(i, i, 1)[0].numpy(), image)


def test_open_is_a_memory_map_not_a_read(tmp_path):
    write_raw(tmp_path, [np.zeros((64, 64), np.uint8)] * 2000)  # 8 MB
    before = pa.total_allocated_bytes()
    shard = ShardFile(tmp_path / shard_name(0))
    shard.image(1500, 1600, 1)
    assert pa.total_allocated_bytes() - before < 2**20  # Arrow allocated nothing for the 8 MB


def test_truncated_shard_names_the_file(tmp_path):
    write_raw(tmp_path, images(50))
    path = tmp_path / shard_name(0)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError) as info:
        ShardFile(path).image(0, 100, 1)
    message = str(info.value)
    assert message.startswith(f"{path}: unreadable or truncated image shard") and "dvc repro" in message and "\n" not in message


def test_corrupt_encoded_row_names_file_and_row(tmp_path):
    with ShardWriter(tmp_path, "png") as writer:
        writer.add(0, png_bytes(images(1)[0]), (1, 5, 7))
        writer.add(1, b"\x89PNG\r\n\x1a\n then garbage", (1, 5, 7))
    with pytest.raises(DatasetError, match=rf"{tmp_path / shard_name(0)} row 1: "):
        ShardFile(tmp_path / shard_name(0)).image(1, 1, 1)


def test_stale_shard_is_refused_by_id(tmp_path):
    write_raw(tmp_path, images(3))
    with pytest.raises(DatasetError, match=r"row 2 holds image id 102, the manifest says 7"):
        ShardFile(tmp_path / shard_name(0)).image(2, 7, 1)
    with pytest.raises(DatasetError, match=r"row 3 out of range \(3 rows\)"):
        ShardFile(tmp_path / shard_name(0)).image(3, None, 1)


def test_missing_shard(tmp_path):
    with pytest.raises(DatasetError, match="image shard is missing"):
        ShardFile(tmp_path / shard_name(0)).image(0, 0, 1)


@pytest.mark.integration
def test_glyphs_are_prepared_packed_and_read_back_exactly(tmp_path, monkeypatch):
    """The prepare and preprocess stages on tiny glyphs: a handful of files, and the training
    splits read back the generator's exact arrays (so the default model cannot change)."""
    from stages.prepare import prepare
    from stages.preprocess import preprocess

    monkeypatch.chdir(tmp_path)
    raw = {"data": {"glyphs": {"max_classes": 6, "samples_per_class": 4}}}
    params = parse_params(raw)
    prepare(params)
    preprocess(params)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"{PREPARED}/dataset.json", f"{PREPARED}/manifest.parquet", f"{PREPARED}/report.json",
                     f"{PREPARED}/{shard_name(0)}", f"{PREPROCESSED}/manifest.parquet", f"{PREPROCESSED}/stats.json"]
    glyphs = generate_glyphs(max_classes=6, samples_per_class=4)
    splits = load_splits(PREPROCESSED)
    assert set(splits) == {"train", "test"} and all(isinstance(s, ShardSplit) for s in splits.values())
    for split in splits.values():
        for index in range(len(split)):
            assert np.array_equal(split.read(index)[0].numpy(), glyphs.images[split.ids[index]])
        memory = in_memory(split, limit_mib=64)
        assert np.array_equal(memory.images[:, 0], glyphs.images[split.ids])
    manifest = read_manifest(PREPARED)
    assert manifest.column("path").to_pylist()[:2] == ["0000/000000", "0000/000001"]
    assert json.loads((tmp_path / PREPARED / "dataset.json").read_text())["images"] == 24


@pytest.mark.integration
def test_training_from_shards_equals_training_from_the_same_images_as_files(tmp_path, monkeypatch):
    """The packed glyphs and the same images written as PNG files (the data path before packing)
    train bit-identical weights: packing changes no pixel and no batch."""
    import torch

    from dml.data.loading import load_split
    from dml.data.manifest import write_manifest
    from dml.data.stats import load_stats
    from dml.training.metric import train
    from stages.prepare import prepare
    from stages.preprocess import preprocess

    monkeypatch.chdir(tmp_path)
    raw = {"data": {"glyphs": {"max_classes": 8, "samples_per_class": 6}}, "train": {"epochs": 2, "batch_size": 16, "num_threads": 1}}
    params = parse_params(raw)
    prepare(params)
    packed = read_manifest(PREPARED)
    files = tmp_path / "files"
    columns = {name: packed.column(name).to_pylist() for name in ("id", "label", "class_name", "split")}
    columns["path"] = [f"images/{i}.png" for i in columns["id"]]
    (files / "images").mkdir(parents=True)
    glyphs = generate_glyphs(max_classes=8, samples_per_class=6)
    for i, path in zip(columns["id"], columns["path"]):
        Image.fromarray(glyphs.images[i]).save(files / path)
    write_manifest(files, columns, {"name": "glyphs as files"})
    preprocess(params)
    from dml.data.config import PreprocessConfig
    from dml.data.preprocess import build_preprocessed

    build_preprocessed(files, tmp_path / "files-preprocessed", PreprocessConfig(channels=1), progress=False)
    weights = {}
    for name, root in (("packed", tmp_path / PREPROCESSED), ("files", tmp_path / "files-preprocessed")):
        split = load_split(root, "train")
        assert type(split).__name__ == ("ShardSplit" if name == "packed" else "FileSplit")
        weights[name] = train(params, split, load_stats(root), progress=False).model.state_dict()
    assert weights["packed"].keys() == weights["files"].keys()
    assert all(torch.equal(weights["packed"][k], weights["files"][k]) for k in weights["packed"])
