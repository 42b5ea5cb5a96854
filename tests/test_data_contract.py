"""The prepared-dataset contract and the preprocess stage: a valid manifest round-trips into the
preprocessed manifest (optionally through a resize cache) with exact train statistics; a broken
dataset fails with one line naming the file."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from dml.config import parse_params
from dml.data.config import PreprocessConfig
from dml.data.decode import decode, decode_file, resize_shorter
from dml.data.manifest import image_root, read_manifest, write_manifest
from dml.data.preprocess import build_preprocessed
from dml.data.stats import load_stats
from dml.embeddings import EmbeddingTable, read_embeddings, write_embeddings
from dml.errors import DatasetError
from dml.io import atomic_dir
from dml.paths import PREPARED, PREPROCESSED
from stages.preprocess import preprocess

SPLIT_CYCLE = ("train", "train", "val", "test")


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


def write_dataset(root: Path, images: list[Image.Image], suffix: str = "png", image_dir: Path | None = None,
                  **save: object) -> dict[str, list]:
    """A manifest over ``images`` (saved as ``suffix``), splits cycling train/train/val/test,
    labels by position; ``image_dir`` (default: ``root``) holds the files."""
    image_dir = root if image_dir is None else image_dir
    (image_dir / "img").mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list] = {"id": [], "path": [], "label": [], "class_name": [], "split": []}
    for i, image in enumerate(images):
        path = f"img/{i}.{suffix}"
        image.save(image_dir / path, **save)
        columns["id"].append(1000 - 7 * i)  # ids out of row order: the output must not care
        columns["path"].append(path)
        columns["label"].append(i % 3)
        columns["class_name"].append(f"class {i % 3}")
        columns["split"].append(SPLIT_CYCLE[i % 4])
    root_value = "." if image_dir == root else os.path.relpath(image_dir, root)
    write_manifest(root, columns, {"name": "synthetic", "image_root": root_value})
    return columns


def noise_images(n: int, mode: str = "RGB", seed: int = 0) -> list[Image.Image]:
    """Random-ish images of different sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    shapes = [(9 + 3 * i, 14 + 5 * (i % 3)) for i in range(n)]
    return [Image.fromarray(rng.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8), mode) for h, w in shapes]


def stored_images(root: Path) -> dict[int, io.BytesIO | Path]:
    """id -> the output manifest's stored image: its file, or its shard row's bytes read with
    pyarrow alone (the reference reader, not dml.data.shards)."""
    table = read_manifest(root)
    folder = image_root(table, root)
    ids, paths = table.column("id").to_pylist(), table.column("path").to_pylist()
    if "shard" not in table.column_names:
        return {i: folder / path for i, path in zip(ids, paths)}
    out = {}
    for i, shard, row in zip(ids, table.column("shard").to_pylist(), table.column("row").to_pylist()):
        shard_table = pa.ipc.open_file(folder / shard).read_all()
        assert shard_table.column("id")[row].as_py() == i
        out[i] = io.BytesIO(shard_table.column("data")[row].as_py())
    return out


def output_pixels(root: Path, mode: str) -> dict[int, np.ndarray]:
    """id -> pixels of the output manifest's images decoded by PIL (H, W, C), the reference decoder."""
    out = {}
    for i, stored in stored_images(root).items():
        with Image.open(stored) as image:
            array = np.asarray(image.convert(mode))
        out[i] = array[..., None] if array.ndim == 2 else array
    return out


def numpy_stats(arrays: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """numpy's mean / std over all pixels of all images (concatenated), per channel."""
    stacked = np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays]).astype(np.float64)
    return stacked.mean(axis=0).tolist(), stacked.std(axis=0).tolist()


def train_ids(columns: dict[str, list]) -> list[int]:
    return [i for i, s in zip(columns["id"], columns["split"]) if s == "train"]


def run(tmp_path: Path, **cfg: object) -> Path:
    out = tmp_path / "data/preprocessed"
    build_preprocessed(tmp_path / "data/prepared", out, PreprocessConfig(**cfg), progress=False)
    return out


@pytest.mark.integration
def test_stage_round_trip_without_cache_points_at_the_prepared_images(tmp_path, monkeypatch, capsys):
    """The default (glyph) config: no copies, relative paths only, exact stats of the PNGs."""
    monkeypatch.chdir(tmp_path)
    images = noise_images(8, "L")
    columns = write_dataset(tmp_path / PREPARED, images)
    preprocess(parse_params({"preprocess": {"channels": 1}}))
    assert "preprocessed 8 images: train 4 (3 classes), val 2 (2 classes), test 2 (2 classes);" in capsys.readouterr().out
    table = read_manifest(PREPROCESSED)  # every path resolves
    for name in ("id", "path", "label", "class_name", "split"):
        assert table.column(name).to_pylist() == columns[name]
    assert table.schema.metadata[b"image_root"] == b"../prepared" and table.schema.metadata[b"name"] == b"synthetic"
    assert sorted(p.name for p in (tmp_path / PREPROCESSED).iterdir()) == ["manifest.parquet", "stats.json"]
    stats = load_stats(PREPROCESSED)
    mean, std = numpy_stats([np.asarray(im)[..., None] for im, s in zip(images, columns["split"]) if s == "train"])
    assert stats.channels == 1 and stats.mean == pytest.approx(mean, rel=1e-9) and stats.std == pytest.approx(std, rel=1e-9)
    assert len(stats.sha256) == 64


def test_relative_image_root_stays_relative_absolute_stays_absolute(tmp_path):
    write_dataset(tmp_path / "data/prepared", noise_images(4), image_dir=tmp_path / "raw")
    table = read_manifest(run(tmp_path, channels=3))
    assert table.schema.metadata[b"image_root"] == b"../../raw"
    elsewhere = tmp_path / "elsewhere"
    write_dataset(elsewhere / "data/prepared", noise_images(4), image_dir=tmp_path / "raw")
    prepared = pq.read_table(elsewhere / "data/prepared/manifest.parquet")
    absolute = prepared.replace_schema_metadata({**prepared.schema.metadata, b"image_root": str(tmp_path / "raw").encode()})
    pq.write_table(absolute, elsewhere / "data/prepared/manifest.parquet")
    assert read_manifest(run(elsewhere, channels=3)).schema.metadata[b"image_root"] == str(tmp_path / "raw").encode()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resize", [None, 10])
def test_stats_match_numpy_over_the_output_pixels(tmp_path, channels, resize):
    """Images of different sizes, with and without the (lossless) cache: mean/std equal numpy's
    over the concatenated pixels the output files decode to, and only over the train split."""
    images = noise_images(12, "RGB", seed=channels)
    columns = write_dataset(tmp_path / "data/prepared", images)
    out = run(tmp_path, channels=channels, resize=resize, format="png")
    mode = "L" if channels == 1 else "RGB"
    pixels = output_pixels(out, mode)
    if resize is None:
        assert all(np.array_equal(pixels[i], output) for i, output in
                   zip(columns["id"], output_pixels(tmp_path / "data/prepared", mode).values()))
    else:
        assert max(min(a.shape[:2]) for a in pixels.values()) == resize  # some images were shrunk
    mean, std = numpy_stats([pixels[i] for i in train_ids(columns)])
    stats = load_stats(out)
    assert stats.channels == channels and len(stats.mean) == channels
    assert stats.mean == pytest.approx(mean, rel=1e-9) and stats.std == pytest.approx(std, rel=1e-9)


def test_jpeg_cache_stats_are_those_of_the_decoded_cache_files(tmp_path):
    columns = write_dataset(tmp_path / "data/prepared", noise_images(8), suffix="jpg", quality=90)
    out = run(tmp_path, channels=3, resize=12, format="jpeg", quality=80)
    table = read_manifest(out)  # every cached path resolves
    for name in ("id", "label", "class_name", "split"):
        assert table.column(name).to_pylist() == columns[name]
    mean, std = numpy_stats([output_pixels(out, "RGB")[i] for i in train_ids(columns)])
    stats = load_stats(out)
    assert stats.mean == pytest.approx(mean, rel=1e-9) and stats.std == pytest.approx(std, rel=1e-9)


@pytest.mark.parametrize(("size", "expected"), [((400, 300), (341, 256)), ((300, 400), (256, 341)), ((120, 90), (120, 90))])
def test_resize_keeps_the_aspect_ratio_and_never_upscales(size, expected):
    image = torch.zeros(3, size[1], size[0], dtype=torch.uint8)
    assert tuple(resize_shorter(image, 256).shape[1:][::-1]) == expected
    assert resize_shorter(image, None) is image


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
@pytest.mark.parametrize("channels", [1, 3])
def test_cache_formats(tmp_path, fmt, pil_format, channels):
    images = [Image.new("RGB", (40, 30), (200, 100, 50)), Image.new("RGB", (20, 10), (10, 20, 30))] * 2
    write_dataset(tmp_path / "data/prepared", images)
    out = run(tmp_path, channels=channels, resize=16, format=fmt)
    table = read_manifest(out)
    assert table.schema.metadata[b"image_root"] == b"."
    assert table.column("path").to_pylist() == [f"img/{i}.png" for i in range(4)]  # still names the source image
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["manifest.parquet", "shards/00000.arrow", "stats.json"]
    for stored in stored_images(out).values():
        with Image.open(stored) as cached:
            assert cached.format == pil_format and cached.size in {(21, 16), (20, 10)}
        assert decode(torch.frombuffer(bytearray(stored.getvalue()), dtype=torch.uint8), channels, "x").shape[0] == channels


def save_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_odd_images_get_the_dataset_channel_count(tmp_path):
    """Gray, CMYK (torchvision's conversion agrees with PIL's), palette, RGBA, 16-bit PNG and a
    BMP (PIL fallback) all decode to 3 channels in an RGB dataset, to 1 in a gray one."""
    ramp = np.linspace(0, 255, 16 * 24).reshape(16, 24)
    rgb = Image.fromarray(np.stack([ramp, ramp[::-1], np.full_like(ramp, 60)], axis=-1).astype(np.uint8))
    odd = {
        "gray.jpg": save_bytes(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": save_bytes(rgb.convert("CMYK"), "JPEG"),
        "palette.png": save_bytes(rgb.convert("P"), "PNG"),
        "alpha.png": save_bytes(rgb.convert("RGBA"), "PNG"),
        "deep.png": save_bytes(Image.fromarray(np.full((5, 7), 40000, dtype=np.uint16)), "PNG"),
        "old.bmp": save_bytes(rgb, "BMP"),
        "photo.webp": save_bytes(rgb, "WEBP"),
    }
    for name, data in odd.items():
        (tmp_path / name).write_bytes(data)
        for channels in (1, 3):
            image = decode_file(tmp_path / name, channels)
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == channels, (name, channels)
    cmyk = decode_file(tmp_path / "cmyk.jpg", 3).permute(1, 2, 0).numpy()
    with Image.open(tmp_path / "cmyk.jpg") as opened:
        assert opened.mode == "CMYK"
        assert np.abs(cmyk.astype(int) - np.asarray(opened.convert("RGB"))).max() <= 1
    assert np.abs(cmyk.astype(int) - np.asarray(rgb)).mean() < 5  # the original colours, not inverted ones
    assert int(decode_file(tmp_path / "deep.png", 1).max()) == 40000 >> 8


def test_gray_and_cmyk_jpegs_in_an_rgb_dataset_are_cached_in_rgb(tmp_path):
    rgb = noise_images(4)
    images = [rgb[0].convert("L"), rgb[1].convert("CMYK"), rgb[2], rgb[3]]
    write_dataset(tmp_path / "data/prepared", images, suffix="jpg")
    out = run(tmp_path, channels=3, resize=10)
    for stored in stored_images(out).values():
        with Image.open(stored) as cached:
            assert cached.mode == "RGB"


def test_corrupt_image_names_the_file_and_keeps_previous_output(tmp_path):
    write_dataset(tmp_path / "data/prepared", noise_images(8))
    out = run(tmp_path, channels=3, resize=10)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (tmp_path / "data/prepared/img/4.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    with pytest.raises(DatasetError) as info:
        run(tmp_path, channels=3, resize=10, workers=2)
    message = str(info.value)
    assert "img/4.png: " in message and "\n" not in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["prepared", "preprocessed"]  # no temporary folder left


def test_not_an_image_at_all(tmp_path):
    write_dataset(tmp_path / "data/prepared", noise_images(4))
    (tmp_path / "data/prepared/img/1.png").write_bytes(b"hello")
    with pytest.raises(DatasetError, match=r"img/1.png: not an image file"):
        run(tmp_path, channels=1)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("resize", [None, 12])
def test_output_does_not_depend_on_the_worker_count(tmp_path, resize):
    write_dataset(tmp_path / "data/prepared", noise_images(16), suffix="jpg")
    one = tree(run(tmp_path, channels=3, resize=resize, workers=1))
    two = tree(run(tmp_path, channels=3, resize=resize, workers=2))
    assert one == two and "stats.json" in one


def test_sha256_follows_the_train_and_val_data_only(tmp_path):
    write_dataset(tmp_path / "data/prepared", noise_images(8))

    def digest() -> str:
        return load_stats(run(tmp_path, channels=3)).sha256

    first = digest()
    noise_images(1, seed=5)[0].save(tmp_path / "data/prepared/img/3.png")  # a test image
    assert digest() == first
    noise_images(1, seed=5)[0].save(tmp_path / "data/prepared/img/2.png")  # a val image
    second = digest()
    assert second != first
    assert load_stats(run(tmp_path, channels=1)).sha256 != second


def test_no_train_split(tmp_path):
    columns = write_dataset(tmp_path / "data/prepared", noise_images(4))
    write_manifest(tmp_path / "data/prepared", {**columns, "split": ["test"] * 4}, {"name": "x"})
    with pytest.raises(DatasetError, match="no 'train' images"):
        run(tmp_path, channels=1)


def test_preprocess_params():
    assert parse_params({}).preprocess == PreprocessConfig(channels=1, resize=None, format="jpeg", quality=95, workers=2)
    for bad in ({"resize": 4}, {"format": "gif"}, {"quality": 0}, {"workers": 0}, {"image_size": 32}):
        with pytest.raises(ValueError, match="preprocess"):
            parse_params({"preprocess": bad})


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
        (lambda t: t.set_column(4, "split", pa.array(["train"] * 5 + ["valid"])), "unknown split value(s) ['valid']"),
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


def test_raw_cache_holds_the_pixels_a_lossless_cache_decodes_to(tmp_path):
    """``format: raw`` packs the resized pixels themselves: what a loader reads equals what it
    decodes from the PNG cache, and the statistics agree."""
    from dml.data.loading import load_splits

    write_dataset(tmp_path / "data/prepared", noise_images(8), suffix="jpg")
    outs = {}
    for fmt in ("png", "raw"):
        base = tmp_path / fmt
        shutil.copytree(tmp_path / "data", base / "data")
        outs[fmt] = run(base, channels=3, resize=12, format=fmt)
    splits = {fmt: load_splits(out) for fmt, out in outs.items()}
    for name, split in splits["png"].items():
        raw = splits["raw"][name]
        assert all(torch.equal(split.read(i), raw.read(i)) for i in range(len(split)))
    assert load_stats(outs["png"]).mean == load_stats(outs["raw"]).mean
