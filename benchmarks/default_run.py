"""The default run from configure to report before and after the monitoring change, in one run.

Old: the code of ``--old`` (default: the commit before the refactor), whose training embedded all
11,240 test images and ran an exact kNN with every one of them as a query after every epoch. New:
this working tree, which monitors ``monitor.queries`` fixed seeded queries against the whole test
split every ``monitor.every`` epochs. Each runs the pipeline's stage commands (its dvc.yaml,
configure .. report, in order) in its own copy of the code, after that copy's own prepare and
preprocess (the data layout changed in between: the glyphs are packed now; those two stages are
timed but not part of the ratio). Prints the seconds per stage and in total, the ratio new/old
from configure to report (target <= 0.65), and the final R@1 of both and whether the weights are
identical: monitoring never touches the weights and packing does not change a pixel, so they
must be (the model files' bytes differ: each records the data's sha256, which covers the stored
bytes, PNG files then, packed raw pixels now).

Usage: ``python benchmarks/default_run.py [--old REV]`` on a quiet machine (about 7 + 5 minutes on
2 cores).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("prepare", "preprocess")
BEFORE_REFACTOR = "f584b8d"


def checkout(base: Path, rev: str | None) -> Path:
    """The code of ``rev`` (None: this working tree's tracked files)."""
    base.mkdir(parents=True)
    if rev is None:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
        for name in tracked:
            if (ROOT / name).is_file():
                (base / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, base / name)
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
    return base


def run_pipeline(base: Path) -> dict:
    stages = list(yaml.safe_load((base / "dvc.yaml").read_text())["stages"])
    seconds = {}
    for stage in [*DATA_STAGES, *stages[stages.index("configure"):]]:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=base, check=True, capture_output=True)
        seconds[stage] = time.perf_counter() - started
    r1 = json.loads((base / "metrics/eval.json").read_text())["recall_at_1"]
    weights = torch.load(base / "models/model.pt", map_location="cpu", weights_only=True)["state_dict"]
    epochs = json.loads((base / ".dml/timings/train.json").read_text())["epoch_seconds"] if (base / ".dml/timings/train.json").is_file() else []
    return {"seconds": seconds, "recall_at_1": r1, "weights": weights, "epoch_seconds": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=BEFORE_REFACTOR, help="the revision with the old monitoring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = run_pipeline(checkout(Path(tmp) / "old", args.old))
        print(f"old ({args.old}): {sum(old['seconds'].values()):.1f} s", flush=True)
        new = run_pipeline(checkout(Path(tmp) / "new", None))
        print(f"new (working tree): {sum(new['seconds'].values()):.1f} s", flush=True)
    print(f"{'stage':<10} {'old s':>8} {'new s':>8}")
    for stage in old["seconds"]:
        print(f"{stage:<10} {old['seconds'][stage]:8.1f} {new['seconds'].get(stage, float('nan')):8.1f}")
        if stage == DATA_STAGES[-1]:
            print("-- configure to report:")
    total_old, total_new = (sum(v for k, v in run["seconds"].items() if k not in DATA_STAGES) for run in (old, new))
    print(f"{'total':<10} {total_old:8.1f} {total_new:8.1f}")
    print(f"ratio new/old: {total_new / total_old:.3f} (target <= 0.65)")
    print(f"epoch seconds old {old['epoch_seconds']}\nepoch seconds new {new['epoch_seconds']}")
    same_weights = old["weights"].keys() == new["weights"].keys() and all(
        torch.equal(old["weights"][name], new["weights"][name]) for name in old["weights"])
    print(f"R@1 old {old['recall_at_1']!r}, new {new['recall_at_1']!r}")
    same = same_weights and old["recall_at_1"] == new["recall_at_1"]
    print("identical weights and R@1" if same else "WEIGHTS OR R@1 DIFFER")


if __name__ == "__main__":
    main()
