"""Flat vs IVF vs HNSW (+PQ) FAISS indexes at gallery scale (default 1M x 128): build time, index
size, query speed, top-1 agreement with exact search and peak memory.

Data: a synthetic stand-in for DML embeddings, deterministic from ``--seed``. Classes (default
``gallery / 10``, i.e. 100k classes of ~10 items) have gaussian centres; an item is its class
centre plus gaussian noise (``--noise`` times the centre spread). Both are drawn with per-dimension
std ``(i + 1) ** -alpha``, so the singular values decay like real embeddings' (the default alpha = 1
gives a spectral decay rho ~0.62, near the 0.58 of this repo's trained glyph model), then a fixed random
rotation spreads that spectrum over all coordinates (real principal axes are not the coordinate
axes; PQ sub-vectors would notice) and every vector is L2-normalised; the metric is ``l2`` (the pipeline's default; for unit vectors it
ranks like ``ip``, and FAISS's PQ codes approximate L2 far better than inner products). The
queries are new items of random classes, not in the gallery. Gallery and queries are generated in
chunks (low memory) into .npy files under ``--cache`` once, and reused by later runs.

Measurement: every step runs in a fresh subprocess (``--worker``) so that its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that step alone. The driver never holds the
data (not even to generate it): on Linux a child's ru_maxrss starts at its parent's peak, so the
driver must stay below every worker's (checked against the worker's own ``VmHWM``). A worker
loads the gallery with ``np.load`` (no mmap: the matrix counts once) and records the RSS after
imports + loading, then

* ``exact``: ``exact_searcher(gallery, "l2")(queries, 1)`` (``faiss.knn``, no index copy): the
  reference top-1 ids and the exact query time;
* each index config: ``build_index(gallery, IndexConfig(...))`` on all FAISS threads (hnsw with
  ``deterministic=False``), timed; then the gallery array is deleted, since every index here holds
  its own copy of the vectors (Flat storage, IVF lists, HNSW storage) or their PQ codes; the
  search parameter (ivf ``nprobe``, hnsw ``ef_search``) is swept with ``configure_search`` on the
  same index, each setting timed over all queries at k = 1 after one small warm-up search, with
  top-1 agreement = mean(ids == exact ids).

Peak memory = the worker's ru_maxrss after build + all searches, also given relative to the
embedding matrix (n x d x 4 bytes); it includes the interpreter and libraries (~55 MiB), which
dominate at small sizes. Index bytes = the size of ``faiss.write_index``'s output, counted without
materialising it. Target (the issue): some ANN config with top-1 agreement >= 0.99 at >= 10x the
exact query speed, whose peak memory is < 3x the embedding matrix.

Usage: ``python benchmarks/index_scale.py [--gallery 1000000] [--queries 10000]
[--configs flat,ivf,hnsw,ivfpq,ivfpqr] [--cache /tmp/index_scale]`` (``hnswpq``, ``hnswpqr`` also
available; ``...r`` = PQ candidates re-ranked by exact distance, ``--refine-factor``)
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dml.indexing import build_index, configure_search, exact_searcher, factory_string, index_searcher  # noqa: E402
from dml.retrieval_config import IndexConfig  # noqa: E402

CHUNK = 65_536  # rows generated per step; fixed, so the data do not depend on memory settings
WARMUP_QUERIES = 100
TARGET_AGREEMENT, TARGET_SPEEDUP, TARGET_PEAK_RATIO = 0.99, 10.0, 3.0

# name -> (IndexConfig fields beyond the command-line ones, the swept search parameter)
CONFIGS: dict[str, tuple[dict[str, Any], str | None]] = {
    "flat": ({"type": "flat"}, None),
    "ivf": ({"type": "ivf"}, "nprobe"),
    "hnsw": ({"type": "hnsw"}, "ef_search"),
    "ivfpq": ({"type": "ivf", "pq": True}, "nprobe"),
    "ivfpqr": ({"type": "ivf", "pq": True, "refine": True}, "nprobe"),
    "hnswpq": ({"type": "hnsw", "pq": True}, "ef_search"),
    "hnswpqr": ({"type": "hnsw", "pq": True, "refine": True}, "ef_search"),
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSpec:
    gallery: int
    queries: int
    dim: int
    per_class: int
    alpha: float
    noise: float
    seed: int

    @property
    def classes(self) -> int:
        return max(1, self.gallery // self.per_class)

    @property
    def matrix_bytes(self) -> int:
        return self.gallery * self.dim * 4

    def path(self, cache: Path, what: str) -> Path:
        """The cache file of ``what``; gallery files do not depend on the number of queries."""
        key = f"n{self.gallery}_d{self.dim}_c{self.per_class}_a{self.alpha:g}_s{self.noise:g}_seed{self.seed}"
        if not what.startswith("gallery"):
            key += f"_q{self.queries}"
        return cache / f"{key}_{what}.npy"


def generate(spec: DataSpec, cache: Path) -> None:
    """Write ``gallery``/``queries`` (float32, unit rows) and their class labels as .npy files."""
    scale = ((np.arange(spec.dim) + 1.0) ** -spec.alpha).astype(np.float32)
    rng = np.random.default_rng([spec.seed, 0])
    centres = rng.standard_normal((spec.classes, spec.dim), dtype=np.float32) * scale
    rotation = np.linalg.qr(rng.standard_normal((spec.dim, spec.dim)))[0].astype(np.float32)
    for stream, (what, n) in enumerate((("gallery", spec.gallery), ("queries", spec.queries)), start=1):
        final = spec.path(cache, what)
        partial = final.with_name(final.stem + ".partial.npy")
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, spec.dim))
        labels = np.empty(n, dtype=np.int32)
        for chunk, start in enumerate(range(0, n, CHUNK)):
            rng = np.random.default_rng([spec.seed, stream, chunk])
            rows = min(CHUNK, n - start)
            label = rng.integers(0, spec.classes, rows)
            noise = rng.standard_normal((rows, spec.dim), dtype=np.float32) * (spec.noise * scale)
            x = (centres[label] + noise) @ rotation
            out[start:start + rows] = x / np.linalg.norm(x, axis=1, keepdims=True)
            labels[start:start + rows] = label
        out.flush()
        del out
        np.save(spec.path(cache, f"{what}_labels"), labels)
        os.replace(partial, final)  # last: an interrupted run leaves no complete-looking file


# --------------------------------------------------------------------------- memory


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def proc_status_bytes(field: str) -> int | None:
    """``VmHWM`` (this address space's own peak) or ``VmRSS`` from /proc/self/status, if any."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory(label: str) -> dict[str, int | None]:
    return {f"{label}_peak": peak_rss_bytes(), f"{label}_hwm": proc_status_bytes("VmHWM"), f"{label}_rss": proc_status_bytes("VmRSS")}


def index_bytes(index: faiss.Index) -> int:
    """Serialised size of ``index``, counted chunk by chunk (no second copy in memory)."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


# --------------------------------------------------------------------------- workers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def exact_worker(task: dict[str, Any]) -> dict[str, Any]:
    spec, cache = DataSpec(**task["data"]), Path(task["cache"])
    result: dict[str, Any] = memory("imports")
    gallery = np.load(spec.path(cache, "gallery"))
    queries = np.load(spec.path(cache, "queries"))
    result |= memory("loaded")
    search = exact_searcher(gallery, "l2")
    search(queries[:WARMUP_QUERIES], 1)
    started = time.perf_counter()
    ids = search(queries, 1)[1][:, 0]
    result["query_s"] = time.perf_counter() - started
    result |= memory("end")
    np.save(spec.path(cache, "exact_top1"), ids)
    # how DML-like the data are: does the exact top-1 neighbour share the query's class?
    labels = np.load(spec.path(cache, "gallery_labels"))
    result["class_recall_at_1"] = float(np.mean(labels[ids] == np.load(spec.path(cache, "queries_labels"))))
    return result


def index_worker(task: dict[str, Any]) -> dict[str, Any]:
    spec, cache = DataSpec(**task["data"]), Path(task["cache"])
    cfg = IndexConfig(**task["index"])
    result: dict[str, Any] = {"factory": factory_string(cfg)} | memory("imports")
    gallery = np.load(spec.path(cache, "gallery"))
    queries = np.load(spec.path(cache, "queries"))
    exact = np.load(spec.path(cache, "exact_top1"))
    result |= memory("loaded")
    log(f"[{task['name']}] building {result['factory']} over {gallery.shape[0]} x {gallery.shape[1]}")
    started = time.perf_counter()
    index = build_index(gallery, cfg)
    result["build_s"] = time.perf_counter() - started
    result |= memory("built")
    del gallery  # every index type here stores its own copy of the vectors (or their PQ codes)
    result |= memory("freed")
    search = index_searcher(index)
    search(queries[:WARMUP_QUERIES], 1)
    param = task["param"]
    result["sweep"] = []
    for value in task["values"] if param else [None]:
        if param:
            configure_search(index, IndexConfig(**{**cfg.model_dump(), param: value}))
        started = time.perf_counter()
        ids = search(queries, 1)[1][:, 0]
        seconds = time.perf_counter() - started
        result["sweep"].append({"param": param, "value": value, "query_s": seconds, "agreement": float(np.mean(ids == exact))})
        log(f"[{task['name']}] {param}={value}: {seconds:.2f} s, agreement {result['sweep'][-1]['agreement']:.4f}")
    result |= memory("end")  # before index_bytes, which allocates its write chunks
    result["index_bytes"] = index_bytes(index)
    return result


def worker(task: dict[str, Any]) -> None:
    if task["task"] == "generate":
        generate(DataSpec(**task["data"]), Path(task["cache"]))
        result: dict[str, Any] = memory("end")
    elif task["task"] == "exact":
        result = exact_worker(task)
    else:
        result = index_worker(task)
    Path(task["result"]).write_text(json.dumps(result))


def run_worker(task: dict[str, Any], cache: Path) -> dict[str, Any] | None:
    """Run one task in a fresh interpreter; its result, or None (reported) if it failed."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir=cache, delete=False) as handle:
        result_path = Path(handle.name)
    try:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task | {"result": str(result_path)})]
        done = subprocess.run(command, check=False, cwd=ROOT)
        if done.returncode != 0:
            hint = " (SIGKILL: out of memory?)" if done.returncode == -9 else ""
            print(f"[{task.get('name', task['task'])}] worker failed with exit status {done.returncode}{hint}", flush=True)
            return None
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- driver


def index_task(name: str, args: argparse.Namespace) -> dict[str, Any]:
    fields, param = CONFIGS[name]
    fields = dict(fields)
    pq = fields.pop("pq", False)
    refine = fields.pop("refine", False)
    cfg = {
        **fields,
        "metric": "l2",
        "nlist": args.nlist,
        "hnsw_m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "pq_m": args.pq_m if pq else 0,
        "refine_factor": args.refine_factor if refine else 0,
        "pq_nbits": args.pq_nbits,
        "seed": args.seed,
        "deterministic": False,  # hnsw: build on all threads
    }
    values = {"nprobe": [p for p in args.nprobe if p <= args.nlist], "ef_search": args.ef_search, None: []}[param]
    return {"task": "index", "name": name, "index": cfg, "param": param, "values": values}


def check_memory(name: str, result: dict[str, Any]) -> None:
    """ru_maxrss includes a parent's peak inherited at exec; the driver is small, so they agree."""
    peak, hwm = result["end_peak"], result.get("end_hwm")
    if hwm is not None and peak > 1.05 * hwm + (16 << 20):
        print(f"warning [{name}]: ru_maxrss {peak >> 20} MiB exceeds VmHWM {hwm >> 20} MiB (inherited from the parent?)")


MIB = 1 << 20
COLUMNS = (("config", "<18"), ("search", "<13"), ("build s", ">8"), ("index MiB", ">9"), ("query s", ">8"),
           ("queries/s", ">10"), ("x exact", ">8"), ("top-1", ">6"), ("peak MiB", ">8"), ("peak/mat", ">8"))


def table_row(*cells: str) -> str:
    return " ".join(f"{cell:{align}}" for cell, (_, align) in zip(cells, COLUMNS, strict=True))


def report(spec: DataSpec, exact: dict[str, Any], results: dict[str, dict[str, Any] | None]) -> None:
    """The table (one row per index config and search setting) and the verdict on the target."""
    matrix, exact_s = spec.matrix_bytes, exact["query_s"]
    print()
    print(f"gallery {spec.gallery} x {spec.dim} float32 ({matrix / MIB:.0f} MiB), {spec.queries} queries, k = 1, metric l2, "
          f"{spec.classes} classes, alpha {spec.alpha:g}, noise {spec.noise:g}, seed {spec.seed}")
    print(f"FAISS threads: {faiss.omp_get_max_threads()}; the exact top-1 shares the query's class for "
          f"{exact['class_recall_at_1']:.3f} of queries; RSS after imports + loading: {exact['loaded_peak'] / MIB:.0f} MiB")
    header = table_row(*(name for name, _ in COLUMNS))
    print(header)
    print("-" * len(header))
    print(table_row("exact (faiss.knn)", "", "-", "-", f"{exact_s:.2f}", f"{spec.queries / exact_s:.0f}", "1.00", "1.000",
                    f"{exact['end_peak'] / MIB:.0f}", f"{exact['end_peak'] / matrix:.2f}"))
    passing = []
    for name, result in results.items():
        if result is None:
            print(f"{name:<18} failed (see its worker's error above)")
            continue
        peak_ratio = result["end_peak"] / matrix
        for row in result["sweep"]:
            speedup = exact_s / row["query_s"]
            search = f"{row['param']}={row['value']}" if row["param"] else ""
            print(table_row(result["factory"], search, f"{result['build_s']:.1f}", f"{result['index_bytes'] / MIB:.0f}",
                            f"{row['query_s']:.2f}", f"{spec.queries / row['query_s']:.0f}", f"{speedup:.2f}",
                            f"{row['agreement']:.3f}", f"{result['end_peak'] / MIB:.0f}", f"{peak_ratio:.2f}"))
            if name != "flat" and row["agreement"] >= TARGET_AGREEMENT and speedup >= TARGET_SPEEDUP and peak_ratio < TARGET_PEAK_RATIO:
                passing.append(f"{result['factory']} {search} (top-1 {row['agreement']:.3f}, {speedup:.1f}x, peak {peak_ratio:.2f}x)")
    print()
    print(f"target: an ANN config with top-1 agreement >= {TARGET_AGREEMENT} at >= {TARGET_SPEEDUP:g}x the exact query speed "
          f"and peak memory < {TARGET_PEAK_RATIO:g}x the embedding matrix")
    print("PASS: " + "; ".join(passing) if passing else "FAIL: no ANN config meets all three")
    if matrix < 256 * MIB:
        print(f"(at {matrix / MIB:.0f} MiB the interpreter and libraries dominate peak/mat; the memory target is meant for 1M x 128)")


def ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--per-class", type=int, default=10, help="gallery items per class on average")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="per-dimension std ~ (i + 1) ** -alpha; 1.0 gives spectral decay rho ~0.62, "
                             "close to the glyph model's test embeddings (0.58); 0.5 gives rho ~0.13")
    parser.add_argument("--noise", type=float, default=0.45,
                        help="within-class std / centre std; 0.45: the exact top-1 shares the query's class for "
                             "~0.72 of queries at 1M (a DML-like Recall@1), 1.0: ~0.03")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "index_scale")
    parser.add_argument("--configs", default="flat,ivf,hnsw,ivfpq,ivfpqr", help=f"comma-separated, of {','.join(CONFIGS)}")
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--nprobe", type=ints, default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=ints, default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--pq-m", type=int, default=64)
    parser.add_argument("--pq-nbits", type=int, default=4, help="4: FAISS's SIMD fast-scan PQ for ivf")
    parser.add_argument("--refine-factor", type=int, default=256, help="ivfpqr/hnswpqr: candidates re-ranked per result")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    names = [name for name in args.configs.split(",") if name]
    if unknown := set(names) - set(CONFIGS):
        parser.error(f"--configs: unknown {sorted(unknown)}; choose from {list(CONFIGS)}")

    began = time.perf_counter()
    spec = DataSpec(args.gallery, args.queries, args.dim, args.per_class, args.alpha, args.noise, args.seed)
    args.cache.mkdir(parents=True, exist_ok=True)
    common = {"data": asdict(spec), "cache": str(args.cache)}
    if not (spec.path(args.cache, "gallery").is_file() and spec.path(args.cache, "queries").is_file()):
        print(f"generating {spec.gallery} + {spec.queries} x {spec.dim} embeddings into {args.cache} ...", flush=True)
        started = time.perf_counter()
        if run_worker({"task": "generate", **common}, args.cache) is None:
            sys.exit(1)
        print(f"  {time.perf_counter() - started:.1f} s")
    exact = run_worker({"task": "exact", "name": "exact", **common}, args.cache)
    if exact is None:
        sys.exit(1)
    check_memory("exact", exact)
    results: dict[str, dict[str, Any] | None] = {}
    for name in names:
        results[name] = run_worker(index_task(name, args) | common, args.cache)
        if results[name] is not None:
            check_memory(name, results[name])

    report(spec, exact, results)
    print(f"total wall time: {time.perf_counter() - began:.0f} s")

if __name__ == "__main__":
    main()
