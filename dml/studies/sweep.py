"""Sweep files (``sweeps/*.yaml``): a study as a list of DVC experiments, checked before any runs.

A sweep names its runs ``<sweep>-<variant>-s<seed>``; each is ``params.yaml`` plus the sweep's
``base`` overrides, the variant's overrides and ``train.seed``. :func:`plan` validates the file
(strict pydantic schema) and then *every* run's params with the pipeline's own schema
(:func:`dml.config.parse_params`), and checks that DVC's ``-S`` (Hydra override grammar) reads each
override back as the value the file meant: a study that would fail on variant 7 after six
trainings fails before the first, with one line per bad variant. Torch-free.

Example (``sweeps/rho.yaml``)::

    name: rho
    variants:
      - {name: distance, overrides: {miner.name: distance}}
      - {name: p0.2, overrides: {miner.name: rho_distance, miner.rho_distance.p: 0.2}}
    seeds: [0, 1, 2]
    concurrency: 1
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from dml.config import apply_overrides, parse_params, read_yaml
from dml.errors import ConfigError
from dml.paths import PARAMS as PARAMS_FILE
from dml.studies.dvc_overrides import hydra_parser, misread_override, set_args

SEED_KEY = "train.seed"
# Experiment names become git refs (refs/exps/.../<name>): a conservative subset of git's rules
# (no "..": a dot is always followed by another character than a dot).
NAME_PATTERN = r"[A-Za-z0-9](?:(?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?[A-Za-z0-9_])?"
NAME_RULE = "letters, digits, '_', '.', '-'; no leading '-' or '.', no trailing '-' or '.', no '..'"
Name = Annotated[str, StringConstraints(pattern=f"^{NAME_PATTERN}$", max_length=80)]
KEY_PATTERN = r"[A-Za-z_]\w*(?:\.\w+)+"  # a dotted params key: section.key[.key ...]
Key = Annotated[str, StringConstraints(pattern=f"^{KEY_PATTERN}$")]
Scalar = bool | int | float | str | None
Value = Scalar | list[Scalar]


class SweepError(ValueError):
    """A sweep cannot run; ``lines`` are its one-line reasons (one per bad variant)."""

    def __init__(self, lines: list[str] | str) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Variant(_Strict):
    name: Name
    overrides: dict[Key, Value] = {}


class SweepSpec(_Strict):
    """The schema of a sweep file."""

    name: Name
    description: str = ""
    base: dict[Key, Value] = Field({}, description="overrides of every run")
    grid: dict[Key, Annotated[list[Value], Field(min_length=1)]] | None = Field(None, description="cartesian product")
    variants: list[Variant] | None = Field(None, min_length=1, description="named override sets")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    concurrency: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if (self.grid is None) == (self.variants is None):
            raise ValueError("give exactly one of grid (a cartesian product) or variants (named override sets)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: repeated seed in {self.seeds}")
        keyed = [("base", self.base), ("grid", self.grid or {})]
        keyed += [(f"variants[{i}].overrides", v.overrides) for i, v in enumerate(self.variants or [])]
        for where, mapping in keyed:
            if SEED_KEY in mapping:
                raise ValueError(f"{where}.{SEED_KEY}: the seed is set by seeds, not by an override")
        for key, values in (self.grid or {}).items():
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"grid.{key}: repeated value in {values}")
        return self


@dataclass(frozen=True)
class SweepRun:
    """One DVC experiment of a sweep: a variant at a seed."""

    sweep: str
    variant: str
    seed: int
    overrides: dict[str, Any] = field(hash=False)  # base, then the variant's, then train.seed

    @property
    def exp_name(self) -> str:
        return f"{self.sweep}-{self.variant}-s{self.seed}"


@dataclass(frozen=True)
class Plan:
    """A validated sweep: its spec, its runs in order, and each run's full params (by exp name)
    as the experiment's params.yaml will hold them."""

    path: Path
    spec: SweepSpec
    runs: list[SweepRun]
    params: dict[str, dict[str, Any]]
    set_args: dict[str, list[str]]

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(run.variant for run in self.runs))


def _loc(parts: tuple) -> str:
    out = ""
    for part in (p for p in parts if p != "[key]"):  # pydantic's marker of a dict key's own error
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and validate a sweep file; :class:`SweepError` names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found")
    try:
        raw = read_yaml(path)  # as params.yaml is read (YAML 1.2): `off` is a string, `1e-3` a number
    except ConfigError as err:
        raise SweepError(str(err)) from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: top level must be a mapping (name, base, grid or variants, seeds, concurrency)")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "string_pattern_mismatch":
            msg = f"{first['input']!r} is not a dotted params key (section.key)" if first["loc"][-1] == "[key]" else \
                f"{first['input']!r} is not a valid name ({NAME_RULE})"
        elif "input" in first and not isinstance(first["input"], dict):
            msg = f"{msg} (got {first['input']!r})"
        loc = _loc(first["loc"])
        more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
        raise SweepError(f"{path}: {loc + ': ' if loc else ''}{msg}{more}") from None


def _label(value: Any) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def grid_variant_name(combo: dict[str, Any]) -> str:
    """A grid point's name: the value alone for a one-key grid (``32``, ``arcface``); else a method
    choice by its value and a knob by its last key and value (``arcface-batch_size64``)."""
    if len(combo) == 1:
        return _label(next(iter(combo.values())))
    return "-".join(_label(v) if k.endswith(".name") else f"{k.rsplit('.', 1)[-1]}{_label(v)}" for k, v in combo.items())


def expand(spec: SweepSpec) -> list[SweepRun]:
    """Every variant x seed, seed by seed (an interrupted sweep has whole passes over the
    variants), variants in file order (grid: the product in key order)."""
    if spec.grid is not None:
        keys = list(spec.grid)
        variants = [(grid_variant_name(dict(zip(keys, combo))), dict(zip(keys, combo)))
                    for combo in itertools.product(*spec.grid.values())]
    else:
        variants = [(v.name, dict(v.overrides)) for v in spec.variants]
    names = [name for name, _ in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepError(f"sweep {spec.name!r}: variant names are not unique: {repeated}")
    for name in names:
        if not re.fullmatch(NAME_PATTERN, name):
            raise SweepError(f"sweep {spec.name!r}: grid point {name!r} makes no valid experiment name; use variants with names")
    return [SweepRun(spec.name, name, seed, {**spec.base, **overrides, SEED_KEY: seed})
            for seed in spec.seeds for name, overrides in variants]


def with_condition(spec: SweepSpec, overrides: dict[str, Any] | None = None, name: str | None = None,
                   concurrency: int | None = None) -> SweepSpec:
    """The same sweep under a condition: ``overrides`` added to (and winning over) its base, under
    another ``name`` (its experiments, report folder and MLflow runs), e.g. the rho sweep on the
    shifted split: ``with_condition(spec, {"data.glyphs.split_by": "script"}, "rho-script")``;
    ``concurrency`` replaces the file's (how it runs, not what: the runs stay the same)."""
    if not overrides and name is None and concurrency is None:
        return spec
    if name is not None and not re.fullmatch(NAME_PATTERN, name):
        raise SweepError(f"--name {name!r}: not a valid sweep name ({NAME_RULE})")
    raw = {**spec.model_dump(exclude_none=True), "base": {**spec.base, **(overrides or {})}, "name": name or spec.name,
           "concurrency": concurrency or spec.concurrency}
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise SweepError(f"{_loc(first['loc'])}: {first['msg'].removeprefix('Value error, ')} (got {first.get('input')!r})") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` of the command line, the value read as YAML like params.yaml (``0.1`` a
    number, ``script`` a string, ``[1,2]`` a list)."""
    from ruamel.yaml import YAML, YAMLError

    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(KEY_PATTERN, key):
        raise SweepError(f"--set {text!r}: expected section.key=value")
    try:
        return key, YAML(typ="safe", pure=True).load(value)
    except YAMLError as err:
        raise SweepError(f"--set {text!r}: the value is not valid YAML ({err})") from None


Progress = Callable[[int, int], None]  # (runs checked, runs in all)


def plan(sweep_path: Path | str, params_path: Path | str = PARAMS_FILE, overrides: dict[str, Any] | None = None,
         name: str | None = None, concurrency: int | None = None, only: list[str] | None = None,
         progress: Progress | None = None) -> Plan:
    """Load the sweep (under the condition ``overrides`` / ``name``, see :func:`with_condition`;
    ``only``: these variants alone, a subset with the same experiment names) and validate every run
    against ``params_path``; raises :class:`SweepError` with one line per bad variant (its first
    bad run). ``progress`` is called now and then while a large sweep is checked."""
    sweep_path, params_path = Path(sweep_path), Path(params_path)
    spec = with_condition(load_sweep(sweep_path), overrides, name, concurrency)
    runs = expand(spec)
    if only:
        variants = list(dict.fromkeys(run.variant for run in runs))
        unknown = [v for v in only if v not in variants]
        if unknown:
            raise SweepError(f"--only: {sweep_path} has no variant {unknown}; it has {variants}")
        runs = [run for run in runs if run.variant in only]
    try:
        raw = read_yaml(params_path) if params_path.is_file() else None
    except ConfigError as err:
        raise SweepError(str(err)) from None
    if not isinstance(raw, dict):
        raise SweepError(f"{params_path}: missing or not a mapping of sections (run from the repository root)")
    parser = hydra_parser()
    errors: dict[str, str] = {}
    params: dict[str, dict[str, Any]] = {}
    args: dict[str, list[str]] = {}
    misread: dict[str, str | None] = {}  # one override's -S argument -> why DVC misreads it
    for done, run in enumerate(runs):
        if progress is not None and done % 500 == 0:
            progress(done, len(runs))
        if run.variant in errors:
            continue
        label = f"{sweep_path}: variant {run.variant!r} (seed {run.seed})"
        expected = apply_overrides(raw, run.overrides)
        try:
            parse_params(expected, label)
        except ConfigError as err:
            errors[run.variant] = str(err)
            continue
        args[run.exp_name] = set_args(raw, run.overrides, parser)
        params[run.exp_name] = expected
        if run.seed == spec.seeds[0]:  # the overrides' spelling is the same for every seed
            for (key, value), arg in zip(run.overrides.items(), args[run.exp_name][1::2]):
                if arg not in misread:
                    misread[arg] = misread_override(params_path, raw, key, value, parser)
                if misread[arg]:
                    errors[run.variant] = f"{label}: {misread[arg]}"
                    break
    if progress is not None:
        progress(len(runs), len(runs))
    if errors:
        raise SweepError(list(errors.values()))
    return Plan(sweep_path, spec, runs, params, args)
