"""Peak memory of training from files: does it grow with the number of images?

Writes ``--images`` small JPEGs (SOP has 59,551 training images; default 60,000) and, in a fresh
process per dataset size (``--sizes``, default 6,000 and 60,000), runs the pipeline's training
loop from files (``FileSplit``, DataLoader with ``--workers`` workers, RandomResizedCrop) for
``--steps`` steps, then one embedding pass over the whole split (what the embed stage and the
embedded samplers' storage refresh do). It prints the peak RSS of the training process and of
its largest worker (``getrusage``), next to what the decoded images would take in RAM at 224 px
(what a hold-the-split-in-memory data path needs: SOP's 60k images are ~9 GB as uint8).

With ``--packed`` the same JPEG bytes are packed into Arrow shards (dml/data/shards.py) and read
memory-mapped (``ShardSplit``). A mapped file's pages that were read count in RSS but belong to
the page cache (the kernel drops them under pressure, and worker processes share them), so the
table also gives the training process's private memory (``RssAnon``) and mapped file pages
(``RssFile``) at the end.

Usage: ``python benchmarks/loader_memory.py [--images 60000] [--sizes 6000 60000] [--workers 2] [--packed]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def small_jpegs(count: int = 64) -> list[bytes]:
    """``count`` distinct SOP-like tiny JPEGs (48x36 noise, quality 80), encoded once."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=80)
        out.append(buffer.getvalue())
    return out


def write_files(root: Path, count: int, packed: bool) -> None:
    """Tiny JPEGs (48x36): the data path's memory must not depend on pixels held, only on files;
    ``packed``: into shards under ``root/packed`` instead."""
    from dml.data.shards import ShardWriter

    base = small_jpegs()
    if packed:
        with ShardWriter(root / "packed", "jpeg") as writer:
            for i in range(count):
                writer.add(i, base[i % 64], (3, 36, 48))
        return
    for i in range(count):
        path = root / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(base[i % 64])


def split_of(root: Path, size: int, packed: bool):
    from dml.data.loading import FileSplit, ShardSplit
    from dml.data.shards import ShardFile, shard_name

    labels, ids = np.arange(size) // 5, np.arange(size)  # SOP-like: ~5 images per class
    if packed:
        return ShardSplit((ShardFile(root / "packed" / shard_name(0)),), np.zeros(size, np.int32), ids, labels, ids, 3)
    paths = np.array([f"{i // 1000:03d}/{i:06d}.jpg".encode() for i in range(size)], dtype=np.bytes_)
    return FileSplit(root, paths, labels, ids, 3)


def status_mib(key: str) -> float:
    """A line of /proc/self/status in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """In a fresh process: ``steps`` training steps on the first ``size`` files, then embed them all."""
    from dml.config import parse_params
    from dml.data.stats import Stats
    from dml.training.metric import build_training
    from dml.training.monitoring import embed_pass

    split = split_of(Path(args.root), args.size, args.packed)
    params = parse_params({
        "model": {"embed_dim": 128}, "train": {"batch_size": 112, "num_threads": 1, "epochs": 1},
        "sampler": {"name": "class_balanced", "class_balanced": {"samples_per_class": 2}},
        "transforms": {"train": "random_resized_crop", "size": 32, "resize": 32, "hflip": True},
        "loader": {"num_workers": args.workers}, "embed": {"batch_size": 512},
    })
    setup = build_training(params, split, Stats([128.0] * 3, [64.0] * 3, 3, "files"))
    setup.seed_epoch(0)
    started = time.perf_counter()
    for step, (images, index) in enumerate(setup.loader):
        loss, _ = setup.batch_loss(images, index)
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        setup.optimizer.step()
        if step + 1 == args.steps:
            break
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    vectors = embed_pass(setup.model, split, params)
    print(json.dumps({
        "size": args.size,
        "train_seconds": round(train_seconds, 1),
        "embed_seconds": round(time.perf_counter() - started, 1),
        "embeddings_mib": round(vectors.nbytes / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "largest_worker_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "rss_anon_mib": round(status_mib("RssAnon"), 1),
        "rss_file_mib": round(status_mib("RssFile"), 1),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6_000, 60_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--packed", action="store_true", help="the images packed into shards, not as files")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_files(Path(tmp), max(args.sizes), args.packed)
        print(f"wrote {max(args.sizes)} JPEGs ({'packed' if args.packed else 'files'}) in {time.perf_counter() - started:.0f} s; {args.workers} workers, {args.steps} training steps, then one embedding pass")
        print("| images | peak RSS (MiB) | private at end (MiB) | mapped files at end (MiB) | largest worker (MiB) | embeddings (MiB) "
              "| same images at 224 px in RAM (MiB) | train s | embed s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for size in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--child", "--root", tmp, "--size", str(size), "--workers", str(args.workers),
                                  "--steps", str(args.steps), *(["--packed"] if args.packed else [])], check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            in_ram = size * 3 * 224 * 224 / 2**20
            print(f"| {size:,} | {r['peak_rss_mib']:.0f} | {r['rss_anon_mib']:.0f} | {r['rss_file_mib']:.0f} | {r['largest_worker_rss_mib']:.0f} | {r['embeddings_mib']:.0f} | {in_ram:,.0f} | "
                  f"{r['train_seconds']} | {r['embed_seconds']} |", flush=True)


if __name__ == "__main__":
    main()
