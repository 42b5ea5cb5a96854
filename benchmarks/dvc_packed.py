"""What packing images into shards saves DVC: ratios measured in one run.

1. **No-op ``dvc repro``** of this repository's default pipeline (it must be up to date:
   ``dvc status`` clean) against ``dvc version`` (DVC's start-up alone), alternated, medians.
   Target of the packed-data issue: at most 3x (7.6x when the glyphs were 22,480 PNG files).
2. **A SOP-size dataset** (``--images``, default 120,000 small JPEGs, SOP-like 48x36 pixels) in two
   throw-away DVC repositories: as files (``dvc add`` of the folder) and packed
   (:class:`dml.data.shards.ShardWriter`, the same bytes in a few Arrow files). Times ``dvc status``
   (nothing changed), ``dvc push`` to a folder remote and ``dvc pull`` back into an empty
   workspace and cache, for each, and prints packed/files ratios.

Usage: ``python benchmarks/dvc_packed.py [--images 120000] [--repeats 5] [--skip-repro]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dml.data.shards import ShardWriter  # noqa: E402


def seconds(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}: {result.stderr.strip() or result.stdout.strip()}")
    return elapsed


def alternate(commands: dict[str, tuple[list[str], Path]], repeats: int) -> dict[str, float]:
    """Median seconds of each command, run A-B, B-A, ... so that machine noise hits all."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            times[name].append(seconds(*commands[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def noop_repro(repeats: int) -> None:
    status = subprocess.run(["dvc", "status", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    if status.returncode != 0:
        raise SystemExit("the default pipeline is not up to date (dvc status is not clean): run `dvc repro` first")
    medians = alternate({"dvc version": (["dvc", "version"], ROOT), "dvc repro (no-op)": (["dvc", "repro"], ROOT)}, repeats)
    base = medians["dvc version"]
    print(f"default pipeline, median of {repeats}:")
    for name, value in medians.items():
        print(f"  {name:28s} {value:6.2f} s  {value / base:5.2f}x dvc version")


def write_dataset(files: Path, packed: Path, count: int) -> None:
    """The same ``count`` JPEGs as files (1,000 per folder) and packed into shards."""
    from loader_memory import small_jpegs  # this folder: the same tiny JPEGs as the memory benchmark

    encoded = small_jpegs()
    with ShardWriter(packed, "jpeg") as writer:
        for i in range(count):
            data = encoded[i % 64][:-2] + i.to_bytes(4, "little") + b"\xff\xd9"  # distinct files: no deduplication
            path = files / f"{i // 1000:03d}" / f"{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            writer.add(i, data, (3, 36, 48))


def dvc_repository(path: Path, data: Path, remote: Path) -> None:
    path.mkdir(parents=True)
    shutil.move(str(data), path / "data")
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "config", "core.autostage", "false"],
                ["dvc", "remote", "add", "-d", "store", str(remote)], ["dvc", "add", "-q", "data"]):
        seconds(cmd, path)


def sop_size(count: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "files-data", tmp / "packed-data", count)
        kinds = ("files", "packed")
        for kind in kinds:
            dvc_repository(tmp / kind, tmp / f"{kind}-data", tmp / f"{kind}-remote")
        size = {kind: sum(p.stat().st_size for p in (tmp / kind / "data").rglob("*") if p.is_file()) for kind in kinds}
        status = alternate({kind: (["dvc", "status", "-q"], tmp / kind) for kind in kinds}, repeats)
        push = {kind: seconds(["dvc", "push", "-q"], tmp / kind) for kind in kinds}
        pull = {}
        for kind in kinds:
            shutil.rmtree(tmp / kind / "data")
            shutil.rmtree(tmp / kind / ".dvc" / "cache")
            pull[kind] = seconds(["dvc", "pull", "-q"], tmp / kind)
    print(f"{count} images of 48x36 px as JPEG files vs packed into shards ({size['files'] / 1e6:.0f} MB of files, "
          f"{size['packed'] / 1e6:.0f} MB of shards):")
    for name, values in (("dvc status (median)", status), ("dvc push (folder remote)", push), ("dvc pull (empty cache)", pull)):
        print(f"  {name:28s} files {values['files']:7.2f} s  packed {values['packed']:6.2f} s  "
              f"packed/files {values['packed'] / values['files']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-repro", action="store_true", help="only the SOP-size comparison")
    args = parser.parse_args()
    if not args.skip_repro:
        noop_repro(args.repeats)
    sop_size(args.images, args.repeats)


if __name__ == "__main__":
    main()
