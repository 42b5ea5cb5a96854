"""Running a DVC command from a Prefect task with its output streamed live, line by line, into
the task's log (a long training must be watchable while it runs, not after it ends)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    returncode: int
    lines: list[str]

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def dvc_command(*args: str) -> list[str]:
    """``python -m dvc --wait-for-lock ...``: concurrent DVC commands on one repository queue for
    its lock (held only for DVC's short check/commit phases) instead of failing."""
    return [sys.executable, "-m", "dvc", "--wait-for-lock", *args]


def stream(cmd: Sequence[str], cwd: str, logger: logging.Logger | logging.LoggerAdapter, prefix: str = "",
           env: dict[str, str] | None = None) -> Finished:
    """Run ``cmd``, logging each line of its stdout and stderr (merged) as soon as it is printed.
    Python children run unbuffered; a progress bar redrawn with carriage returns is logged once,
    in its state when its line ends."""
    full_env = {"PYTHONUNBUFFERED": "1", **os.environ, **(env or {})}
    lines = []
    with subprocess.Popen(list(cmd), cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
            if line.strip():
                lines.append(line)
                logger.info(f"{prefix}{line}")
    return Finished(proc.returncode, lines)
