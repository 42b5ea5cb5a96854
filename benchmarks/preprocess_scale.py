"""The preprocess stage on CUB-like data: images/s and peak memory of the resize cache, against a
plain PIL loop doing the same resize in the same run.

Data: ``--images`` (default 2000) JPEGs of 500 x 375 (CUB's typical size), quality 90, with
random-ish content (a smooth random field upsampled from 12 x 16, plus pixel noise, so they
compress like photos, ~80 kB, rather than like flat colour), 100 classes, splits train / val /
test by class, written once under ``--cache`` with a prepared manifest (generation is streamed
and not timed).

Measurement: every run is a fresh subprocess (``--worker``), so its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own; the driver never imports torch and holds one
image at a time, so it stays below the workers' peaks (a forked child's ru_maxrss starts at its
parent's). Runs:

* ``stage``: :func:`dml.data.preprocess.build_preprocessed` with ``resize=256``, jpeg quality 95,
  for each ``--workers`` count: decode, resize, encode, write, plus what the stage does on top of
  the resize (re-decoding the train cache files for exact statistics, sha256 of train + val);
* ``pil``: for each image ``Image.open(...).convert("RGB")``, ``resize`` of the shorter side to
  256 (bilinear, ``reducing_gap=None``: exact antialiasing like torchvision's; at this 1.46x
  scale PIL's ``reducing_gap`` / JPEG ``draft`` shortcuts cannot apply, they need >= 2x), save
  as JPEG quality 95, on the same number of threads (PIL releases the GIL while coding).

Usage: ``python benchmarks/preprocess_scale.py [--images 2000] [--workers 1,2] [--cache DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT, SIZE, CLASSES = 500, 375, 256, 100


def generate(folder: Path, n: int, seed: int = 0) -> None:
    """CUB-like JPEGs and their manifest under ``folder`` (skipped when already there)."""
    from PIL import Image

    from dml.data.manifest import MANIFEST_NAME, write_manifest

    if (folder / MANIFEST_NAME).is_file() and len(list(folder.glob("images/*/*.jpg"))) == n:
        return
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"id": [], "path": [], "label": [], "class_name": [], "split": []}
    for i in range(n):
        label = i % CLASSES
        field = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        pixels = np.asarray(field, dtype=np.int16) + rng.integers(-24, 25, (HEIGHT, WIDTH, 3), dtype=np.int16)
        path = f"images/{label:03d}/{i:06d}.jpg"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / path, quality=90)
        split = "train" if label < CLASSES // 2 else "val" if label < 6 * CLASSES // 10 else "test"
        for key, value in zip(columns, (i, path, label, f"class {label}", split)):
            columns[key].append(value)
    write_manifest(folder, columns, {"name": "cub-like"})


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(kind: str, data: Path, out: Path, workers: int) -> dict:
    """One timed run (imports excluded from the time, reported as the RSS they cost)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from dml.data.config import PreprocessConfig
    from dml.data.manifest import read_manifest

    if kind == "stage":
        from dml.data.preprocess import build_preprocessed  # torch + torchvision: the PIL run goes without

    imported = _rss_mib()
    started = time.perf_counter()
    if kind == "stage":
        cfg = PreprocessConfig(channels=3, resize=SIZE, format="jpeg", quality=95, workers=workers)
        summary = build_preprocessed(data, out, cfg, progress=False)
        images, written = sum(summary.split_images.values()), summary.bytes_written
    else:
        paths = read_manifest(data).column("path").to_pylist()
        out.mkdir(parents=True, exist_ok=True)

        def one(i: int) -> int:
            with Image.open(data / paths[i]) as image:
                image = image.convert("RGB")
                w, h = image.size
                scale = SIZE / min(w, h)
                image = image.resize((int(w * scale), int(h * scale)), Image.Resampling.BILINEAR, reducing_gap=None)
            image.save(out / f"{i}.jpg", quality=95)
            return (out / f"{i}.jpg").stat().st_size

        with ThreadPoolExecutor(workers) as pool:
            written = sum(pool.map(one, range(len(paths))))
        images = len(paths)
    seconds = time.perf_counter() - started
    return {"kind": kind, "workers": workers, "images": images, "seconds": seconds, "images_per_s": images / seconds,
            "mb_written": written / 1e6, "rss_after_imports_mib": imported, "peak_rss_mib": _rss_mib()}


def measure(kind: str, data: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory(dir=data.parent) as out:
        cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--out", str(Path(out) / "result"),
               "--workers", str(workers)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "preprocess_scale")
    parser.add_argument("--worker", choices=["stage", "pil"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.out, counts[0])))
        return
    data = args.cache / f"cub_like_{args.images}"
    started = time.perf_counter()
    generate(data, args.images)
    size_mb = sum(p.stat().st_size for p in data.glob("images/*/*.jpg")) / 1e6
    print(f"{args.images} JPEGs {WIDTH}x{HEIGHT} q90 ({size_mb:.0f} MB) in {data} (ready after {time.perf_counter() - started:.0f} s); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before timing")
    print(f"{'run':<8}{'workers':>8}{'seconds':>9}{'images/s':>10}{'MB out':>8}{'RSS imports MiB':>17}{'peak RSS MiB':>14}{'vs PIL':>8}")
    for workers in counts:
        pil = measure("pil", data, workers)
        stage = measure("stage", data, workers)
        for row in (pil, stage):
            ratio = row["images_per_s"] / pil["images_per_s"]
            print(f"{row['kind']:<8}{workers:>8}{row['seconds']:>9.1f}{row['images_per_s']:>10.0f}{row['mb_written']:>8.1f}"
                  f"{row['rss_after_imports_mib']:>17.0f}{row['peak_rss_mib']:>14.0f}{ratio:>8.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} after timing")


if __name__ == "__main__":
    main()
