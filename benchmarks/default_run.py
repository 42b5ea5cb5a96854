"""The default run from configure to report with the old per-epoch monitoring (every test image
queries the whole test split after every epoch) against the new (a fixed seeded sample of
``monitor.queries`` queries against the whole test split), measured in one run.

Each mode runs the pipeline's stage commands (dvc.yaml, configure .. report, in order) in its own
copy of the working tree that shares this repository's prepared and preprocessed data, so
neither mode reads the other's outputs. Prints the seconds per stage and in total, the ratio
new/old (target <= 0.65), and the final R@1 and model hash of both: monitoring never touches the
weights, so they must be identical.

Usage: ``python benchmarks/default_run.py`` after ``dvc repro preprocess``; the whole machine
should be quiet (it takes about 2 x 4 minutes on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ("data/prepared", "data/preprocessed")
MODES = {"old": {"queries": 0, "every": 1}, "new": None}  # None: params.yaml as committed


def stage_order() -> list[str]:
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    return stages[stages.index("configure"):]


def workspace(base: Path, monitor: dict | None) -> Path:
    """A copy of the tracked files with the shared data linked in and ``monitor`` set."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, base / name)
    for name in SHARED_DATA:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).symlink_to(ROOT / name, target_is_directory=True)
    if monitor is not None:
        params = yaml.safe_load((base / "params.yaml").read_text())
        params["monitor"] = monitor
        (base / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return base


def run_mode(base: Path) -> dict:
    seconds = {}
    for stage in stage_order():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=base, check=True, capture_output=True)
        seconds[stage] = time.perf_counter() - started
    r1 = json.loads((base / "metrics/eval.json").read_text())["recall_at_1"]
    model = hashlib.md5((base / "models/model.pt").read_bytes()).hexdigest()
    return {"seconds": seconds, "recall_at_1": r1, "model_md5": model}


def main() -> None:
    missing = [name for name in SHARED_DATA if not (ROOT / name).is_dir()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: run `dvc repro preprocess` first")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, monitor in MODES.items():
            results[mode] = run_mode(workspace(Path(tmp) / mode, monitor))
            print(f"{mode}: {sum(results[mode]['seconds'].values()):.1f} s", flush=True)
    old, new = results["old"], results["new"]
    print(f"{'stage':<10} {'old s':>8} {'new s':>8}")
    for stage in old["seconds"]:
        print(f"{stage:<10} {old['seconds'][stage]:8.1f} {new['seconds'][stage]:8.1f}")
    total_old, total_new = sum(old["seconds"].values()), sum(new["seconds"].values())
    print(f"{'total':<10} {total_old:8.1f} {total_new:8.1f}")
    print(f"ratio new/old: {total_new / total_old:.3f} (target <= 0.65)")
    print(f"R@1 old {old['recall_at_1']!r}, new {new['recall_at_1']!r}; model md5 old {old['model_md5']}, new {new['model_md5']}")
    print("identical model and R@1" if old["model_md5"] == new["model_md5"] and old["recall_at_1"] == new["recall_at_1"]
          else "MODEL OR R@1 DIFFERS")


if __name__ == "__main__":
    main()
