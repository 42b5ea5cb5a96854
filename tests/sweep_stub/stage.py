"""A one-stage stand-in for the pipeline, for the sweep tests: the real params validation and
MLflow tracking (tags, run names, nesting under the sweep's run), metrics files where the real
stages write them, computed from the params by formulas the tests know:

    recall_at_1 = 0.5 + 0.1 * miner.rho_distance.p + 0.01 * train.seed      (p = 0 for another miner)
    recall_at_2 = recall_at_1 + 0.05, nmi = 0.7 + 0.01 * seed, map_at_r = 0.3 + 0.02 * seed
    rho = 1 - p + 0.001 * seed, pi_ratio = 0.5 + p, train_rho_skip1 (last epoch) = 0.8 - p

``optim.lr: 0.0123`` fails with a stage error (never worth a retry); with ``STUB_FLAKY`` set to a
file path, the first attempt of each experiment fails as if a lock were taken (worth one).
Every attempt appends its experiment's name to ``STUB_ATTEMPTS`` when that is set; with
``STUB_SLEEP`` (seconds) it first holds a RUNNING training run that long (a worker killed
meanwhile leaves it RUNNING), and the result lands in that run.
"""

import csv
import json
import os
import sys
from pathlib import Path

from dml.config import load_params
from dml.tracking import report_result

params = load_params("params.yaml")
name = os.environ.get("DVC_EXP_NAME", "workspace")
if os.environ.get("STUB_ATTEMPTS"):
    with open(os.environ["STUB_ATTEMPTS"], "a") as handle:
        handle.write(name + "\n")
flaky = os.environ.get("STUB_FLAKY")
if flaky and name not in (Path(flaky).read_text().split() if Path(flaky).is_file() else []):
    with open(flaky, "a") as handle:
        handle.write(name + "\n")
    print("ERROR: Unable to acquire lock (simulated)", flush=True)
    sys.exit(1)
training = None
if os.environ.get("STUB_SLEEP"):  # a "training" that takes a while, tracked as a RUNNING run meanwhile
    import hashlib
    import time

    from dml.tracking.runs import TrainingRun, new_attempt

    training = TrainingRun(params, hashlib.sha256(name.encode()).hexdigest(), new_attempt())
    time.sleep(float(os.environ["STUB_SLEEP"]))
    training.finish()
if params.optim.lr == 0.0123:
    print("error in stage stub: optim.lr 0.0123 is the stub's simulated failure", file=sys.stderr)
    sys.exit(1)
p = params.miner.rho_distance.p if params.miner.name == "rho_distance" else 0.0
seed = params.train.seed
eval_metrics = {"recall_at_1": 0.5 + 0.1 * p + 0.01 * seed, "recall_at_2": 0.55 + 0.1 * p + 0.01 * seed,
                "nmi": 0.7 + 0.01 * seed, "map_at_r": 0.3 + 0.02 * seed}
spectrum = {"rho": 1 - p + 0.001 * seed, "rho_skip1": 0.9 - p, "pi_ratio": 0.5 + p}
Path("metrics").mkdir(exist_ok=True)
Path("metrics/eval.json").write_text(json.dumps(eval_metrics))
Path("metrics/spectrum.json").write_text(json.dumps(spectrum))
with open("metrics/train_curve.csv", "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["epoch", "loss", "train_rho_skip1"])
    writer.writerows([[1, 0.5, 0.9 - p], [2, 0.4, 0.8 - p], [3, 0.3, ""]])
metrics = {f"eval/{k}": v for k, v in eval_metrics.items()} | {f"space/{k}": v for k, v in spectrum.items()}
report_result(params, training.key if training else None, metrics, {"train/loss": [(1, 0.5), (2, 0.4), (3, 0.3)]}, [], Path("params.yaml"))
print(f"stub {name}: recall_at_1 {eval_metrics['recall_at_1']:.4f}")
