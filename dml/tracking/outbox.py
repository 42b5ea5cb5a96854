"""A durable, append-only record log per MLflow run: what the pipeline tracks is written here
first (one JSON line per record, flushed and fsynced), and sent to MLflow by
:mod:`dml.tracking.sync` whenever the tracking store answers. Training and reporting therefore
never wait for, or fail with, a tracking server; a killed process loses at most the line it was
writing (a torn last line is dropped on the next open).

Layout under ``<repository>/.dml/outbox/``: ``<key>.jsonl`` (the records, ``seq`` 0, 1, ...),
``<key>.files/<seq>/<name>`` (snapshots of artifacts, taken when logged, so a later run that
overwrites ``plots/`` cannot change what an earlier record sends), ``<key>.lock`` (held while
syncing), ``<key>.writer`` (held by the live process that writes the run, :meth:`Outbox.claim`),
``<key>.quarantine`` (damaged records, see :meth:`Outbox.records`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.paths import repo_root

OUTBOX_DIR = Path(".dml/outbox")
TERMINAL = ("FINISHED", "FAILED", "KILLED")
# The fields each kind of record needs (what dml.tracking.sync reads).
FIELDS = {
    "run": ("time", "experiment", "name", "tags", "params"),
    "metrics": ("metrics",),
    "tags": ("tags",),
    "artifact": ("file", "artifact_path"),
    "artifacts": ("dir", "artifact_path"),  # a folder: an MLflow model
    "register": ("name", "artifact_path"),  # a model registry version of the run's MLflow model
    "link_model": ("run_key", "experiment"),
    "link_parent": ("run_key", "experiment"),
    "status": ("status", "time"),
}


def _damage(line: bytes, after: int) -> tuple[dict[str, Any] | None, str]:
    """The record a line holds, or None and why not; records are numbered upwards (``seq``, a
    number above ``after``, the last good one's; normally its 0-based line)."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as err:
        return None, f"not JSON: {err.msg} at column {err.colno}"
    seq = record.get("seq") if isinstance(record, dict) else None
    if type(seq) is not int or seq <= after or record.get("op") not in FIELDS:
        return None, "not a record of this outbox in its place"
    missing = [name for name in FIELDS[record["op"]] if name not in record]
    return (None, f"{record['op']} record without {', '.join(missing)}") if missing else (record, "")


def _kept_lines(quarantine: str) -> set[int]:
    """The outbox lines a quarantine file holds (an entry it cannot read is skipped)."""
    kept = set()
    for entry in quarantine.splitlines():
        try:
            kept.add(int(json.loads(entry)["line"]))
        except (ValueError, KeyError, TypeError):
            continue
    return kept


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
        self.quarantine = self.root / f"{key}.quarantine"  # damaged records, kept aside
        self._records: list[dict[str, Any]] | None = None
        self._next_seq = 0  # past every line, damaged ones included
        self._writer: Any = None  # the open <key>.writer file while this object is the writer

    def claim(self) -> bool:
        """Become the outbox's one writer for as long as this object lives: an exclusive lock on
        ``<key>.writer``, which the OS releases when the process ends, however it ends. False
        when a live process holds it (a training of a concurrent experiment, say)."""
        if self._writer is None:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / f"{self.key}.writer").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            self._writer = handle
        return True

    def release(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def exists(self) -> bool:
        return self.path.is_file()

    def records(self) -> list[dict[str, Any]]:
        """Every complete, intact record, in order; a torn last line (its writer was killed
        mid-write, or is writing it right now) is not one. A damaged line (a disk or an editor
        changed it) is skipped and copied to ``<key>.quarantine`` the first time it is met, with
        one warning line naming the file and line: the run's other records still sync. The line
        stays in the outbox too: a reader must not rewrite a log another process appends to."""
        if self._records is None:
            data = self.path.read_bytes() if self.path.is_file() else b""
            lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
            self._records, damaged, last = [], {}, -1
            for number, line in enumerate(lines, start=1):
                record, why = _damage(line, last)
                if record is None:
                    damaged[number] = (line, why)
                else:
                    self._records.append(record)
                    last = record["seq"]
            self._next_seq = max(len(lines), last + 1)
            if damaged:
                self._quarantine(damaged)
        return self._records

    def _quarantine(self, damaged: dict[int, tuple[bytes, str]]) -> None:
        """Copy the damaged lines not yet kept aside to the quarantine file (under a lock: two
        readers report a line once) and say so."""
        with self.quarantine.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            known = _kept_lines(handle.read())
            for number, (line, why) in sorted(damaged.items()):
                if number in known:
                    continue
                text = line.decode("utf-8", "surrogateescape")  # lossless: encode back the same way
                handle.write(json.dumps({"line": number, "reason": why, "text": text}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                opening = "; it was the run's opening record: the run syncs again once it is recorded anew" if number == 1 else ""
                print(f"warning: {self.path} line {number}: damaged tracking record ({why[:120]}), kept aside in "
                      f"{self.quarantine}; the other records sync{opening}", file=sys.stderr)

    def append(self, op: str, **fields: Any) -> int:
        """Write one record durably; returns its sequence number. Only the run's own
        writer appends (one process at a time), so a torn last line it finds is a dead writer's
        and is cut off first."""
        records = self.records()
        record = {"seq": self._next_seq, "op": op, **fields}
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
        self._next_seq += 1
        return record["seq"]

    def append_artifact(self, path: Path, artifact_path: str) -> int:
        """Snapshot ``path`` now (hard link where possible) and record it for upload."""
        self.records()
        target = self.files / str(self._next_seq) / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        return self.append("artifact", file=str(target.relative_to(self.root)), artifact_path=artifact_path)

    def append_artifact_dir(self, path: Path, artifact_path: str) -> int:
        """Snapshot the folder ``path`` now and record it for upload under ``artifact_path``."""
        self.records()
        target = self.files / str(self._next_seq) / Path(path).name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(path, target)
        return self.append("artifacts", dir=str(target.relative_to(self.root)), artifact_path=artifact_path)

    def pending(self) -> bool:
        """Records not yet known to be in MLflow (the run's own tag decides when syncing); none
        while the opening record is missing (the run cannot be created; see :meth:`records`)."""
        try:
            synced = int(self.marker.read_text()) if self.marker.is_file() else -1
        except ValueError:  # a damaged shortcut: the run's tag still knows
            synced = -1
        return self.head() is not None and synced < self.records()[-1]["seq"]

    def mark_synced(self, seq: int) -> None:
        self.marker.write_text(str(seq))

    def head(self) -> dict[str, Any] | None:
        """The opening ``run`` record (experiment, run name, tags, params); None when it is
        damaged (kept aside) and not recorded anew."""
        return next((r for r in self.records() if r["op"] == "run"), None)

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
