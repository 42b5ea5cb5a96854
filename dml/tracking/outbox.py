"""A durable, append-only record log per MLflow run: what the pipeline tracks is written here
first (one JSON line per record, flushed and fsynced), and sent to MLflow by
:mod:`dml.tracking.sync` whenever the tracking store answers. Training and reporting therefore
never wait for, or fail with, a tracking server; a killed process loses at most the line it was
writing (a torn last line is dropped on the next open).

Layout under ``<repository>/.dml/outbox/``: ``<key>.jsonl`` (the records, ``seq`` 0, 1, ...),
``<key>.files/<seq>/<name>`` (snapshots of artifacts, taken when logged, so a later run that
overwrites ``plots/`` cannot change what an earlier record sends), ``<key>.lock`` (held while
syncing).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.paths import repo_root

OUTBOX_DIR = Path(".dml/outbox")
TERMINAL = ("FINISHED", "FAILED", "KILLED")


def outbox_root() -> Path:
    """Beside the repository's ``mlflow.db`` (``DVC_ROOT``: temporary experiment workspaces share it)."""
    return repo_root() / OUTBOX_DIR


class Outbox:
    def __init__(self, root: Path, key: str) -> None:
        self.root = Path(root)
        self.key = key
        self.path = self.root / f"{key}.jsonl"
        self.files = self.root / f"{key}.files"
        self.lock_path = self.root / f"{key}.lock"
        self.marker = self.root / f"{key}.synced"  # last seq known to be in MLflow (a shortcut only)
        self._records: list[dict[str, Any]] | None = None

    def exists(self) -> bool:
        return self.path.is_file()

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in order; a torn last line (its writer was killed mid-write,
        or is writing it right now) is not one."""
        if self._records is None:
            data = self.path.read_bytes() if self.path.is_file() else b""
            complete = data[: data.rfind(b"\n") + 1]
            self._records = [json.loads(line) for line in complete.decode().splitlines()]
        return self._records

    def append(self, op: str, **fields: Any) -> int:
        """Write one record durably; returns its sequence number. Only the run's own writer
        appends (one process at a time), so a torn last line it finds is a dead writer's and is
        cut off first."""
        records = self.records()
        record = {"seq": len(records), "op": op, **fields}
        self.root.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    handle.seek(0)
                    data = handle.read()
                    handle.truncate(data.rfind(b"\n") + 1)
            handle.write((json.dumps(record, sort_keys=True) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
        records.append(record)
        return record["seq"]

    def append_artifact(self, path: Path, artifact_path: str) -> int:
        """Snapshot ``path`` now (hard link where possible) and record it for upload."""
        seq = len(self.records())
        target = self.files / str(seq) / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        return self.append("artifact", file=str(target.relative_to(self.root)), artifact_path=artifact_path)

    def pending(self) -> bool:
        """Records not yet known to be in MLflow (the run's own tag decides when syncing)."""
        synced = int(self.marker.read_text()) if self.marker.is_file() else -1
        return synced < len(self.records()) - 1

    def mark_synced(self, seq: int) -> None:
        self.marker.write_text(str(seq))

    def head(self) -> dict[str, Any]:
        """The opening ``run`` record (experiment, run name, tags, params)."""
        return self.records()[0]

    def status(self) -> str | None:
        """The last status recorded (None while the run has only ever been running)."""
        statuses = [r["status"] for r in self.records() if r["op"] == "status"]
        return statuses[-1] if statuses else None

    def logged_steps(self, key: str) -> set[int]:
        return {m[2] for r in self.records() if r["op"] == "metrics" for m in r["metrics"] if m[0] == key}

    def has_tag(self, tag: str) -> bool:
        return any(r["op"] == "tags" and tag in r["tags"] for r in self.records())


def all_outboxes(root: Path) -> Iterator[Outbox]:
    """Every outbox under ``root``, oldest first (training runs before the results that link them)."""
    if root.is_dir():
        for path in sorted(root.glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns):
            yield Outbox(root, path.stem)
