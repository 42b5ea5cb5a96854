"""Run names and tags: what a run is called in MLflow, relative to the committed params.yaml (or a
sweep's base), so that runs of one study read as their differences and seeds."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dml.config import Params, apply_overrides, parse_params
from dml.errors import ConfigError
from dml.paths import PARAMS as PARAMS_FILE
from dml.paths import repo_root
from dml.config import _flatten as flatten

# Set by a sweep (pipelines/sweep.py) for the stages of its experiments: the sweep's name, the
# variant's name (the tag that groups a variant's seeds) and the outbox key of the sweep's parent run.
SWEEP_ENV, VARIANT_ENV, SWEEP_RUN_ENV = "DML_SWEEP", "DML_VARIANT", "DML_SWEEP_RUN_KEY"
# A sweep's base overrides (JSON, dotted keys): its runs are named by what differs from them, the
# variant, since the sweep's own run and tag already say what all of them share.
SWEEP_BASE_ENV = "DML_SWEEP_BASE"


def source_commit() -> str:
    """The commit the result comes from: in a DVC experiment the baseline commit it was run from
    (``DVC_EXP_BASELINE_REV``; the experiment's own commit is made only after its stages have
    run), else the repository's HEAD. Uncommitted changes are not in either."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_tags(params: Params) -> dict[str, str]:
    """MLflow's standard source tags, the variant (a sweep's name for it, else what differs from
    the committed params.yaml, seed aside: the tag that groups a variant's seeds; see
    :func:`differences`) and the sweep and DVC experiment the run belongs to."""
    stage = os.environ.get("DVC_STAGE")
    tags = {
        "mlflow.source.git.commit": source_commit(),
        "mlflow.source.name": f"dvc.yaml:{stage}" if stage else Path(sys.argv[0]).name,
        "mlflow.source.type": "LOCAL",
        "dml.variant": os.environ.get(VARIANT_ENV) or " ".join(f"{k}={v}" for k, v in differences(params)) or "defaults",
    }
    for tag, env in (("dml.sweep", SWEEP_ENV), ("dvc.exp_name", "DVC_EXP_NAME")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


NAME_KEYS = 4  # differences shown in a run name (the seed comes on top)
NAME_SECTIONS = ("loss", "miner", "sampler", "model", "optim", "train", "transforms", "data", "preprocess",
                 "embed", "index", "eval", "spectrum", "gallery")  # the order differences are named in
NOT_NAMED = ("train.seed", "train.num_threads", "train.device")  # the seed is named apart; the rest changes no number


def _short(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def differences(params: Params, reference: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """``[(short key, value)]`` of the run's params (:meth:`Params.flat`) that differ from
    ``reference`` (default :func:`reference_params`: the project's params.yaml as committed),
    training choices first. A value that ``auto`` resolves to (the loss's default miner and
    normalisation) is no difference. Short keys: ``loss`` for ``loss.name``, else the last part
    (``p``, ``batch_size``); where two would clash, the key without its section
    (``triplet.margin``) or, for a section's own knob, the whole key (``embed.batch_size``)."""
    reference = reference_params() if reference is None else reference
    knobs = params.loss.knobs
    auto = {"miner.name": knobs.default_miner, "model.normalize": knobs.normalized_embeddings}
    rank = {section: i for i, section in enumerate(NAME_SECTIONS)}
    found = [(key, value) for key, value in params.flat().items()
             if key.split(".")[0] in rank and key not in NOT_NAMED and key in reference
             and value != reference[key] and not (key in auto and value == auto[key])]
    found.sort(key=lambda item: rank[item[0].split(".")[0]])
    shorts = [key.rsplit(".", 2)[-2] if key.endswith(".name") else key.rsplit(".", 1)[-1] for key, _ in found]
    return [(short if shorts.count(short) == 1 else key.split(".", 1)[1] if key.count(".") > 1 else key, _short(value))
            for short, (key, value) in zip(shorts, found)]


def _all_keys(params: Params) -> dict[str, Any]:
    """Every key of ``params`` (all methods' knobs, not only the selected ones'), in the form
    :meth:`Params.flat` gives them."""
    return flatten(params.model_dump(mode="json"))


@functools.cache
def _defaults() -> dict[str, Any]:
    """The schema's defaults (``parse_params({})``), every key."""
    return _all_keys(parse_params({}))


def reference_params() -> dict[str, Any]:
    """What a run name is relative to: the project's own defaults, its ``params.yaml`` as committed
    at the commit the run comes from (:func:`source_commit`: a DVC experiment's baseline, else
    HEAD) in the repository at :func:`repo_root` (also for ``--temp`` workspaces), every key.
    Falls back to the schema's defaults where there is no such file (no git repository, the file
    not committed, or no longer valid under the current schema). Inside a sweep, that file plus the
    sweep's base overrides (``DML_SWEEP_BASE``): its runs are named by their variant and seed."""
    return _committed_params(str(repo_root()), source_commit(), os.environ.get(SWEEP_BASE_ENV, "")) or _defaults()


@functools.cache
def _committed_params(root: str, commit: str, base_json: str = "") -> dict[str, Any] | None:
    import json

    from ruamel.yaml import YAML, YAMLError

    try:  # ``<rev>:./<path>``: the path relative to ``root``, also when it is a subfolder of the git repository
        out = subprocess.run(["git", "show", f"{commit}:./{PARAMS_FILE}"], cwd=root, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        raw = YAML(typ="safe", pure=True).load(out.stdout.decode())
        if base_json:
            raw = apply_overrides(raw, json.loads(base_json))
        return _all_keys(parse_params(raw, f"{commit[:12]}:{PARAMS_FILE}"))
    except (ConfigError, YAMLError, UnicodeDecodeError, ValueError, AttributeError):
        return None


def method(params: Params) -> str:
    """The loss and the miner it trains with: ``margin + distance``."""
    return f"{params.loss.name} + {params.miner.name}"


def run_name(params: Params) -> str:
    """What differs from the committed params.yaml (:func:`differences`), a few keys, and the
    seed: ``loss=arcface seed=1``; with no difference, the method: ``margin + distance seed=0``."""
    diffs = differences(params)
    parts = [f"{key}={value}" for key, value in diffs[:NAME_KEYS]] or [method(params)]
    if len(diffs) > NAME_KEYS:
        parts.append(f"+{len(diffs) - NAME_KEYS}")
    return " ".join([*parts, f"seed={params.train.seed}"])


def description(params: Params, metrics: dict[str, float]) -> str:
    """A result run's description (Markdown, shown by MLflow's run page): the data, the method,
    the headline numbers and what differs from the committed params.yaml."""
    diffs = " ".join(f"{key}={value}" for key, value in differences(params)) or "nothing (the project's own params.yaml)"
    numbers = " · ".join(f"{label} {metrics[key]:.3f}" for key, label in
                         (("eval/recall_at_1", "R@1"), ("eval/map_at_r", "MAP@R"), ("eval/nmi", "NMI"),
                          ("space/rho", "rho"), ("space/pi_ratio", "pi_ratio")) if key in metrics)
    return (f"**{params.data.name}** data · model {params.model.name} ({params.model.embed_dim}-d) · loss "
            f"{params.loss.name} · miner {params.miner.name} · sampler {params.sampler.name} · "
            f"{params.train.epochs} epochs · seed {params.train.seed}\n\n{numbers}\n\nDiffers from params.yaml: {diffs}")


def flat_params(params: Params) -> dict[str, str]:
    return {key: str(value) for key, value in params.flat().items()}
