"""End to end on glyph images: a tiny pipeline (prepare -> index, then gallery) in a temporary
copy of the project, then the gallery PNG and ``python -m dml.query`` on its outputs, including
the one-line errors for missing outputs and bad images."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from PIL import Image

from dml.data.manifest import read_manifest
from dml.plotting import OTHER_CLASS, SAME_CLASS
from dml.query import main as query_main

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "preprocess", "configure", "pretrain", "train", "embed", "index", "gallery"]
TINY = {
    "data": {"glyphs": {"max_classes": 16, "samples_per_class": 8}},
    "train": {"epochs": 1, "batch_size": 32, "num_threads": 1},
    "embed": {"batch_size": 64},
    "gallery": {"queries": 4, "worst": 3, "k": 5},
}
OUTPUTS = ["models", "index", "embeddings", "configs", "data/prepared"]

pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory) -> Path:
    """The project's files (committed or not) with a tiny params.yaml, its stages run in order."""
    repo = tmp_path_factory.mktemp("query")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in STAGES:
        run([sys.executable, "-m", f"stages.{stage}"], repo)
    return repo


def pick_test_images(repo: Path, count: int, folder: Path) -> list[tuple[int, Path, str]]:
    """Test images of the packed glyphs, saved as PNG files into ``folder`` from their shard rows
    (read with pyarrow alone): (id, file, ``<shard>#<row>`` as the command names the image)."""
    manifest = read_manifest(repo / "data/prepared", check_files=False)
    test = manifest.filter(pc.equal(manifest.column("split"), "test"))
    picks = np.linspace(0, len(test) - 1, count).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in picks:
        item_id, shard, row = (test.column(name)[i].as_py() for name in ("id", "shard", "row"))
        shard_table = pa.ipc.open_file(repo / "data/prepared" / shard).read_all()
        size = shard_table.column("height")[row].as_py(), shard_table.column("width")[row].as_py()
        pixels = np.frombuffer(shard_table.column("data")[row].as_py(), np.uint8).reshape(size)
        Image.fromarray(pixels).save(folder / f"{item_id}.png")
        out.append((item_id, folder / f"{item_id}.png", f"data/prepared/{shard}#{row}"))
    return out


def result_rows(stdout: str) -> dict[str, list[list[str]]]:
    """``{query header: [[rank, distance, id, label, class, path], ...]}`` from the printed tables."""
    blocks = {}
    for block in stdout.strip().split("\n\n"):
        lines = block.splitlines()
        if lines[0].startswith("query "):
            blocks[lines[0]] = [line.split() for line in lines[2:]]
    return blocks


def test_gallery_stage_png(glyph_run):
    """The stage's PNG is there, framed in both class colours, sized for 4 + 3 rows."""
    png = glyph_run / "plots/gallery.png"
    image = np.asarray(Image.open(png).convert("RGB"))
    colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in (SAME_CLASS, OTHER_CLASS)}
    assert colours <= {tuple(p) for p in np.unique(image.reshape(-1, 3), axis=0)}
    assert image.shape[0] > 7 * 64 and image.shape[1] > 6 * 64


def test_query_returns_the_test_image_itself_first(glyph_run, tmp_path):
    """A test image (saved from its shard as a file) is in the index: the command (a subprocess,
    as a user runs it) finds it first at distance ~0, prints k rows per image naming id, label,
    class and where the image is stored, and draws the PNG."""
    images = pick_test_images(glyph_run, 2, tmp_path / "queries")
    png = tmp_path / "out" / "query.png"
    result = run([sys.executable, "-m", "dml.query", *[str(p) for _, p, _ in images], "--k", "4", "--png", str(png)], glyph_run)
    blocks = result_rows(result.stdout)
    assert len(blocks) == 2
    for (own_id, _path, stored), (header, rows) in zip(images, blocks.items()):
        assert "dataset id" not in header  # a file outside the packed dataset
        assert [row[0] for row in rows] == ["1", "2", "3", "4"]
        rank, distance, item_id, _label = rows[0][:4]
        assert int(item_id) == own_id and float(distance) < 1e-3
        assert rows[0][-1].endswith(stored)
    assert Image.open(png).size[0] > 5 * 64


@pytest.mark.parametrize("missing", ["models/model.pt", "index/test.faiss", "embeddings/test.parquet", "data/prepared/manifest.parquet"])
def test_missing_pipeline_output_is_one_line(glyph_run, tmp_path, capsys, missing):
    root = tmp_path / "root"
    for name in OUTPUTS:
        shutil.copytree(glyph_run / name, root / name)
    (root / missing).unlink()
    _, image, _ = pick_test_images(glyph_run, 1, tmp_path / "queries")[0]
    assert query_main([str(image), "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and missing in err
    assert "missing" in err or "not found" in err


def _not_an_image(path: Path) -> None:
    path.write_text("this is text, not pixels\n")


def _truncated_png(path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])


def _lab_tiff(path: Path) -> None:
    Image.new("LAB", (32, 32)).save(path)  # CIELab: PIL cannot convert it to grayscale or RGB


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("notes.png", _not_an_image, "not an image file"),
        ("cut.png", _truncated_png, "corrupt or unconvertible image"),
        ("lab.tif", _lab_tiff, "corrupt or unconvertible image (ValueError: conversion from LAB"),
        ("absent.png", None, "no such image file"),
        ("folder.png", Path.mkdir, "not a file"),
    ],
)
def test_bad_image_is_one_line(glyph_run, tmp_path, capsys, name, make, message):
    path = tmp_path / name
    if make is not None:
        make(path)
    _, good, _ = pick_test_images(glyph_run, 1, tmp_path / "queries")[0]
    assert query_main([str(good), str(path), "--root", str(glyph_run)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith(f"error: {path}: {message}")


def test_corrupt_index_and_model_are_one_line(glyph_run, tmp_path, capsys):
    root = tmp_path / "root"
    for name in OUTPUTS:
        shutil.copytree(glyph_run / name, root / name)
    _, image, _ = pick_test_images(glyph_run, 1, tmp_path / "queries")[0]
    (root / "index/test.faiss").write_bytes(b"garbage" * 10)
    assert query_main([str(image), "--root", str(root)]) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: {root / 'index/test.faiss'}: unreadable FAISS index")
    shutil.copy2(glyph_run / "index/test.faiss", root / "index/test.faiss")
    (root / "models/model.pt").write_bytes(b"garbage" * 10)
    assert query_main([str(image), "--root", str(root)]) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: {root / 'models/model.pt'}: unreadable model file")
