"""Sweeps: the sweep file's validation (one line per bad variant, before anything runs), expansion
and run names; aggregation against hand-computed tables; and, marked slow, real sweeps of DVC
experiments on a one-stage stand-in pipeline (tests/sweep_stub: the real params validation and
MLflow tracking, metrics by known formulas): resume, failures, retries, the report, MLflow."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from dml.studies.aggregate import write_report
from dml.studies.dvc_overrides import hydra_value
from dml.studies.experiments import Experiment, parse_exp_show
from dml.studies.sweep import SweepError, expand, grid_variant_name, load_sweep, parse_assignment, plan
from dml.studies.tables import collect_runs, effects, effects_markdown, last_recorded, spearman, summarize
from tests.test_pipeline import ROOT

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweeps_are_valid(path):
    """Every shipped sweep passes the whole check against the project's params.yaml, has seeds
    0, 1, 2 and concurrency 1."""
    sweep = plan(path, ROOT / "params.yaml")
    assert sweep.spec.seeds == [0, 1, 2] and sweep.spec.concurrency == 1
    assert len(sweep.runs) == 3 * len(sweep.variants)


def test_shipped_sweeps_cover_the_zoo():
    """objectives: the 15 losses with the default miner; samplers: the 8 samplers under the margin
    loss; rho: distance and rho_distance at p 0.1, 0.2, 0.35."""
    from dml.losses.config import LossSection
    from dml.samplers.config import SamplerSection

    LOSSES, SAMPLERS = set(LossSection.model_fields) - {"name"}, set(SamplerSection.model_fields) - {"name"}
    objectives = plan(ROOT / "sweeps/objectives.yaml", ROOT / "params.yaml")
    assert set(objectives.variants) == set(LOSSES) and len(objectives.variants) == 15
    assert all(run.overrides["miner.name"] == "auto" for run in objectives.runs)
    samplers = plan(ROOT / "sweeps/samplers.yaml", ROOT / "params.yaml")
    assert set(samplers.variants) == set(SAMPLERS) and len(samplers.variants) == 8
    assert all(run.overrides["loss.name"] == "margin" for run in samplers.runs)
    rho = plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml")
    ps = {run.overrides.get("miner.rho_distance.p") for run in rho.runs if run.overrides["miner.name"] == "rho_distance"}
    assert ps == {0.1, 0.2, 0.35} and {run.overrides["miner.name"] for run in rho.runs} == {"distance", "rho_distance"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nseeds: [0]\n", "x.yaml: give exactly one of grid (a cartesian product) or variants"),
        ("name: x\ngrid: {train.epochs: [1]}\nseeds: [0]\nretries: 2\n", "x.yaml: retries: unknown key"),
        ("name: x\ngrid: {train.epochs: [1]}\nseeds: [0, 0]\n", "x.yaml: seeds: repeated seed in [0, 0]"),
        ("name: x\ngrid: {train.epochs: [1]}\nseeds: ['1']\n", "x.yaml: seeds[0]: Input should be a valid integer (got '1')"),
        ("name: x\ngrid: {train.epochs: [1]}\nseeds: [0]\nconcurrency: 0\n", "x.yaml: concurrency: Input should be greater than or equal to 1 (got 0)"),
        ("name: x y\ngrid: {train.epochs: [1]}\nseeds: [0]\n", "x.yaml: name: 'x y' is not a valid name"),
        ("name: x\ngrid: {epochs: [1]}\nseeds: [0]\n", "x.yaml: grid.epochs: 'epochs' is not a dotted params key"),
        ("name: x\ngrid: {train.seed: [1, 2]}\nseeds: [0]\n", "x.yaml: grid.train.seed: the seed is set by seeds"),
        ("name: x\nvariants: [{name: a, overrides: {}, extra: 1}]\nseeds: [0]\n", "x.yaml: variants[0].extra: unknown key"),
        ("name: x\nvariants: [{name: a}, {name: a}]\nseeds: [0]\n", "sweep 'x': variant names are not unique: ['a']"),
        ("name: x\ngrid: [1]\n", "x.yaml: grid: Input should be a valid dictionary"),
        ("name: [x\n", "x.yaml: line 2 invalid YAML"),
    ],
)
def test_malformed_sweep_file_is_one_line_naming_the_key(tmp_path, text, expected):
    path = write(tmp_path / "x.yaml", text)
    with pytest.raises(SweepError) as info:
        plan(path, ROOT / "params.yaml")
    assert len(info.value.lines) == 1 and "\n" not in str(info.value)
    assert str(info.value).removeprefix(str(tmp_path) + "/").startswith(expected), str(info.value)


def test_every_bad_variant_is_one_line_before_anything_runs(tmp_path):
    """Reference: the pipeline's own schema, applied to params.yaml plus each run's overrides: a
    bad key, a bad value, an unknown component and an incompatible pair, one line each (the
    first bad run of the variant); the good variant gives none."""
    path = write(tmp_path / "bad.yaml", """\
        name: bad
        variants:
          - {name: ok, overrides: {miner.name: rho_distance, miner.rho_distance.p: 0.2}}
          - {name: badkey, overrides: {miner.rho_distance.q: 0.2}}
          - {name: badvalue, overrides: {miner.rho_distance.p: 1.5}}
          - {name: unknown, overrides: {loss.name: supercontrastive}}
          - {name: pair, overrides: {loss.name: arcface, miner.name: distance}}
        seeds: [0, 1]
        """)
    with pytest.raises(SweepError) as info:
        plan(path, ROOT / "params.yaml")
    lines = [line.removeprefix(f"{path}: ") for line in info.value.lines]
    assert len(lines) == 4
    assert lines[0] == "variant 'badkey' (seed 0): miner.rho_distance.q: unknown key"
    assert lines[1].startswith("variant 'badvalue' (seed 0): miner.rho_distance.p: Input should be less than or equal to 1")
    assert lines[2].startswith("variant 'unknown' (seed 0): loss.name: unknown value 'supercontrastive'")
    assert lines[3].startswith("variant 'pair' (seed 0): miner.name: loss.name='arcface' with miner.name='distance'")


@pytest.mark.integration
def test_check_command_exits_1_with_one_line_per_bad_variant(tmp_path):
    """The CLI validates before Prefect or DVC start: exit 1, the lines on stderr, nothing else."""
    write(tmp_path / "sweeps/bad.yaml", """\
        name: bad
        grid: {model.embed_dim: [1, 16, 0]}
        seeds: [0]
        """)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    result = subprocess.run([sys.executable, "-m", "pipelines.sweep", "--root", str(tmp_path), "sweeps/bad.yaml"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "sweeps/bad.yaml: variant '1' (seed 0): model.embed_dim: Input should be greater than or equal to 2 (got 1)",
        "sweeps/bad.yaml: variant '0' (seed 0): model.embed_dim: Input should be greater than or equal to 2 (got 0)",
    ]


# --- expansion and names ---------------------------------------------------------------------


def test_grid_expands_to_the_product_seed_by_seed(tmp_path):
    path = write(tmp_path / "g.yaml", """\
        name: g
        base: {miner.name: rho_distance}
        grid:
          miner.rho_distance.p: [0.1, 0.2]
          train.batch_size: [32, 64]
        seeds: [3, 1]
        """)
    runs = expand(load_sweep(path))
    assert [r.exp_name for r in runs] == [
        "g-p0.1-batch_size32-s3", "g-p0.1-batch_size64-s3", "g-p0.2-batch_size32-s3", "g-p0.2-batch_size64-s3",
        "g-p0.1-batch_size32-s1", "g-p0.1-batch_size64-s1", "g-p0.2-batch_size32-s1", "g-p0.2-batch_size64-s1",
    ]
    assert runs[1].overrides == {"miner.name": "rho_distance", "miner.rho_distance.p": 0.1, "train.batch_size": 64, "train.seed": 3}


def test_variants_override_the_base_and_names_are_deterministic():
    sweep = plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml")
    assert [r.exp_name for r in sweep.runs[:5]] == ["rho-distance-s0", "rho-p0.1-s0", "rho-p0.2-s0", "rho-p0.35-s0", "rho-distance-s1"]
    run = next(r for r in sweep.runs if r.exp_name == "rho-p0.2-s1")
    assert run.overrides == {"loss.name": "margin", "miner.name": "rho_distance", "miner.rho_distance.p": 0.2, "train.seed": 1}
    assert sweep.set_args["rho-p0.2-s1"] == ["-S", "loss.name=margin", "-S", "miner.name=rho_distance",
                                             "-S", "miner.rho_distance.p=0.2", "-S", "train.seed=1"]
    assert sweep.params["rho-p0.2-s1"]["miner"]["rho_distance"]["p"] == 0.2
    assert sweep.params["rho-p0.2-s1"]["train"]["seed"] == 1


def test_a_condition_from_the_command_line_is_its_own_sweep():
    """--set adds to (and wins over) the base, --name renames experiments and the report."""
    sweep = plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml", name="rho-script",
                 overrides={"data.glyphs.split_by": "script", "loss.name": "margin", "optim.lr": 0.0001})
    assert sweep.spec.name == "rho-script" and sweep.runs[1].exp_name == "rho-script-p0.1-s0"
    run = sweep.runs[1]
    assert run.overrides == {"loss.name": "margin", "data.glyphs.split_by": "script", "optim.lr": 0.0001,
                             "miner.name": "rho_distance", "miner.rho_distance.p": 0.1, "train.seed": 0}
    assert sweep.params[run.exp_name]["data"]["glyphs"]["split_by"] == "script"
    assert sweep.params[run.exp_name]["optim"]["lr"] == 0.0001
    # a variant's own override still wins over the condition
    clash = plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml", overrides={"miner.name": "semihard"})
    assert clash.params["rho-p0.1-s0"]["miner"]["name"] == "rho_distance"
    assert clash.params["rho-distance-s0"]["miner"]["name"] == "distance"


def test_only_some_variants_keep_their_experiment_names():
    sweep = plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml", only=["p0.35", "distance"])
    assert [r.exp_name for r in sweep.runs] == ["rho-distance-s0", "rho-p0.35-s0", "rho-distance-s1", "rho-p0.35-s1",
                                               "rho-distance-s2", "rho-p0.35-s2"]  # the file's order, seed by seed
    assert sweep.variants == ["distance", "p0.35"]
    with pytest.raises(SweepError, match=r"--only: .* has no variant \['p0.5'\]"):
        plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml", only=["p0.5"])


@pytest.mark.parametrize("text, expected", [
    ("data.glyphs.split_by=script", ("data.glyphs.split_by", "script")),
    ("optim.lr=1e-4", ("optim.lr", 0.0001)),
    ("pretrain.epochs=10", ("pretrain.epochs", 10)),
    ("eval.recall_at=[1, 10]", ("eval.recall_at", [1, 10])),
    ("train.amp=off", ("train.amp", "off")),  # YAML 1.2, as params.yaml is read
])
def test_command_line_values_are_read_as_params_yaml_reads_them(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["lr=0.1", "optim.lr", "optim.lr=[1,"])
def test_bad_command_line_override_is_one_line(text):
    with pytest.raises(SweepError, match="--set"):
        parse_assignment(text)


def test_bad_condition_fails_the_check_with_one_line_per_variant():
    with pytest.raises(SweepError) as info:
        plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml", overrides={"data.glyphs.split_by": "alphabet"})
    assert len(info.value.lines) == 4 and all("data.glyphs.split_by: unknown value 'alphabet'" in line for line in info.value.lines)
    with pytest.raises(SweepError, match="name"):
        plan(ROOT / "sweeps/rho.yaml", ROOT / "params.yaml", name="no spaces allowed")


def test_grid_names():
    assert grid_variant_name({"loss.name": "arcface"}) == "arcface"
    assert grid_variant_name({"optim.weight_decay": 0.0001}) == "0.0001"
    assert grid_variant_name({"loss.name": "arcface", "train.batch_size": 64}) == "arcface-batch_size64"


@pytest.mark.parametrize(("value", "text"), [
    ("rho_distance", "rho_distance"), ("1", "'1'"), ("true", "'true'"), ("off", "off"), (0.2, "0.2"), (1e-05, "1e-05"),
    (True, "true"), (None, "null"), ([1, 2], "[1,2]"), ("a,b", "'a,b'"), ("it's", "'it\\'s'"),
])
def test_hydra_values_read_back_as_meant(value, text):
    """Reference: Hydra's own override parser (what `dvc exp run -S` uses) reads the text back as
    the value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert hydra_value(value) == text
    assert OverridesParser.create().parse_override(f"k={text}").value() == value


def test_a_key_params_yaml_lacks_is_added_with_plus(tmp_path):
    """A schema key that params.yaml does not spell out is set with Hydra's `+key=value` (plain
    `key=value` is refused by DVC for a missing key); the check runs it through DVC's machinery."""
    text = (ROOT / "params.yaml").read_text()
    params = tmp_path / "params.yaml"
    params.write_text("\n".join(line for line in text.splitlines() if not line.strip().startswith("spectrum_sample:")) + "\n")
    path = write(tmp_path / "s.yaml", "name: s\ngrid: {train.spectrum_sample: [256]}\nseeds: [0]\n")
    sweep = plan(path, params)
    assert sweep.set_args["s-256-s0"] == ["-S", "+train.spectrum_sample=256", "-S", "train.seed=0"]
    assert sweep.params["s-256-s0"]["train"]["spectrum_sample"] == 256


def test_dvc_set_param_keeps_params_readable(tmp_path):
    """DVC's -S rewrite of params.yaml (ruamel) drops the quotes of "off" and turns flow lists into
    block lists; the pipeline reads the rewritten file as the same params (YAML 1.2, like DVC)."""
    from dvc.utils.hydra import apply_overrides

    from dml.config import load_params

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    apply_overrides(path, ["train.seed=1"])
    assert 'amp: "off"' not in path.read_text()
    assert load_params(path).model_dump() == load_params(ROOT / "params.yaml").model_copy(
        update={"train": load_params(ROOT / "params.yaml").train.model_copy(update={"seed": 1})}).model_dump()


# --- aggregation ------------------------------------------------------------------------------


def _exp(name: str, seed: int, recall: float, rho: float, pi: float, nmi: float = 0.5) -> Experiment:
    return Experiment(name, f"rev-{name}", "base", {"train": {"seed": seed}, "spectrum": {"split": "test"}},
                      {"metrics/eval.json": {"recall_at_1": recall, "recall_at_4": recall + 0.1, "nmi": nmi, "map_at_r": recall / 2},
                       "metrics/spectrum.json": {"rho": rho, "pi_ratio": pi, "rho_skip1": 9.0}})


@pytest.fixture
def rho_plan(tmp_path):
    path = write(tmp_path / "two.yaml", """\
        name: two
        variants:
          - {name: b, overrides: {miner.name: rho_distance}}
          - {name: a, overrides: {miner.name: distance}}
        seeds: [0, 1, 2]
        """)
    return plan(path, ROOT / "params.yaml")


def test_aggregation_matches_the_hand_computed_table(rho_plan, tmp_path):
    """Reference: hand-computed means and sample standard deviations (ddof=1). Variant b has
    three seeds (R@1 0.5, 0.6, 0.7: mean 0.6, std 0.1), variant a one seed of three (std blank);
    an experiment with the right name but other params is not counted; rho_train_skip1 is the
    last non-empty value of the curve."""
    experiments = {
        "two-b-s0": _exp("two-b-s0", 0, 0.5, 1.0, 0.2),
        "two-b-s1": _exp("two-b-s1", 1, 0.6, 2.0, 0.4),
        "two-b-s2": _exp("two-b-s2", 2, 0.7, 4.0, 0.9),
        "two-a-s0": _exp("two-a-s0", 0, 0.9, 0.5, 0.1),
        "two-a-s1": _exp("two-a-s1", 1, 0.1, 0.5, 0.1),  # params below are not the plan's: left out
    }
    for name, exp in experiments.items():
        params = rho_plan.params[name] if name != "two-a-s1" else {"other": 1}
        experiments[name] = Experiment(exp.name, exp.rev, exp.baseline, params, exp.metrics)
    curves = {"rev-two-b-s0": "epoch,train_rho_skip1\n1,0.9\n2,0.3\n3,\n", "rev-two-b-s1": "epoch,train_rho_skip1\n1,0.5\n",
              "rev-two-b-s2": "epoch,train_rho_skip1\n1,\n2,0.8\n", "rev-two-a-s0": "epoch,loss\n1,0.4\n"}
    runs = collect_runs(rho_plan, experiments, lambda exp: curves[exp.rev])
    assert list(runs["exp"]) == ["two-b-s0", "two-b-s1", "two-b-s2", "two-a-s0"]  # the sweep's variant order
    assert list(runs.columns) == ["exp", "variant", "seed", "recall_at_1", "recall_at_4", "nmi", "map_at_r", "rho_test",
                                  "rho_train_skip1", "pi_ratio"]
    assert runs["rho_train_skip1"].tolist()[:3] == [0.3, 0.5, 0.8] and math.isnan(runs["rho_train_skip1"].iloc[3])

    table = summarize(runs, rho_plan.variants)
    assert list(table.index) == ["b", "a"] and table["n"].tolist() == [3, 1]
    b, a = table.loc["b"], table.loc["a"]
    assert b["recall_at_1_mean"] == pytest.approx(0.6, abs=1e-12) and b["recall_at_1_std"] == pytest.approx(0.1, abs=1e-12)
    assert b["recall_at_4_mean"] == pytest.approx(0.7, abs=1e-12) and b["map_at_r_std"] == pytest.approx(0.05, abs=1e-12)
    assert b["rho_test_mean"] == pytest.approx(7 / 3, abs=1e-12)
    assert b["rho_test_std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2), abs=1e-12)
    assert b["pi_ratio_mean"] == pytest.approx(0.5, abs=1e-12) and b["pi_ratio_std"] == pytest.approx(math.sqrt(0.13), abs=1e-12)
    assert b["rho_train_skip1_mean"] == pytest.approx(1.6 / 3, abs=1e-12) and b["nmi_std"] == 0.0
    assert a["recall_at_1_mean"] == 0.9 and math.isnan(a["recall_at_1_std"]) and math.isnan(a["rho_train_skip1_mean"])

    files = write_report(runs, table, "two", tmp_path / "report")
    written = pd.read_csv(tmp_path / "report/table.csv", keep_default_na=False)
    assert written.loc[1, "recall_at_1_std"] == ""  # one seed: blank, not 0
    assert float(written.loc[0, "recall_at_1_std"]) == pytest.approx(0.1, abs=1e-12)
    md = (tmp_path / "report/table.md").read_text().splitlines()
    assert md[2] == "| variant | n | R@1 | R@4 | NMI | MAP@R | rho (test) | rho (train, skip 1) | pi_ratio |"
    assert md[4] == "| b | 3 | 0.600 ± 0.100 | 0.700 ± 0.100 | 0.500 ± 0.000 | 0.300 ± 0.050 | 2.333 ± 1.528 | 0.533 ± 0.252 | 0.500 ± 0.361 |"
    assert md[5] == "| a | 1 | 0.900 | 1.000 | 0.500 | 0.450 | 0.500 |  | 0.100 |"
    for name in ("r1_vs_rho.png", "r1_vs_pi_ratio.png", "r1_by_variant.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert tmp_path / "report" / name in files


def test_report_records_the_commit_its_experiments_ran_from(rho_plan, tmp_path):
    """Reference: the experiments' baseline commits as given: the report says where its numbers
    come from and how many of the plan's runs it holds (a partial sweep says so)."""
    from dml.studies.aggregate import aggregate

    experiments = {name: Experiment(name, f"rev-{name}", "c0ffee", rho_plan.params[name], _exp(name, i, 0.5 + i / 10, 1.0, 0.2).metrics)
                   for i, name in enumerate(["two-b-s0", "two-b-s1", "two-a-s0"])}
    _, _, files = aggregate(rho_plan, experiments, tmp_path, tmp_path / "report")
    assert tmp_path / "report" / "source.json" in files
    assert json.loads((tmp_path / "report" / "source.json").read_text()) == {
        "sweep": "two", "runs_planned": len(rho_plan.runs), "runs_reported": 3, "commits": ["c0ffee"]}


def test_effects_are_paired_by_seed_against_the_first_variant():
    """Reference: hand-computed paired differences. Baseline base: R@1 0.80, 0.70, 0.90 (seeds
    0, 1, 2); x: 0.85, 0.72, 0.89 -> differences +0.05, +0.02, -0.01: mean +0.02, sample std 0.03;
    y has seeds 0 and 2 only: 0.60, 0.80 -> -0.20, -0.10: mean -0.15, std sqrt(0.005)."""
    import pandas as pd

    runs = pd.DataFrame({"exp": list("abcdefgh"), "variant": ["base"] * 3 + ["x"] * 3 + ["y"] * 2,
                         "seed": [0, 1, 2, 0, 1, 2, 0, 2],
                         "recall_at_1": [0.80, 0.70, 0.90, 0.85, 0.72, 0.89, 0.60, 0.80],
                         "pi_ratio": [0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.5, 0.5]})
    table = effects(runs, ["base", "x", "y"])
    assert list(table.index) == ["x", "y"] and table["n"].tolist() == [3, 2] and set(table["baseline"]) == {"base"}
    assert table.at["x", "recall_at_1_delta_mean"] == pytest.approx(0.02, abs=1e-12)
    assert table.at["x", "recall_at_1_delta_std"] == pytest.approx(0.03, abs=1e-12)
    assert table.at["y", "recall_at_1_delta_mean"] == pytest.approx(-0.15, abs=1e-12)
    assert table.at["y", "recall_at_1_delta_std"] == pytest.approx(math.sqrt(0.005), abs=1e-12)
    assert table.at["x", "pi_ratio_delta_mean"] == pytest.approx(0.2, abs=1e-12)
    text = effects_markdown(table, "s")
    assert "| x | 3 | +0.020 ± 0.030 | +0.200 ± 0.100 |" in text and "| y | 2 | -0.150 ± 0.071 |" in text


def test_spearman_matches_scipy_and_is_in_the_report(rho_plan, tmp_path):
    """Reference: scipy.stats.spearmanr on the same points (the runs having both values)."""
    from scipy.stats import spearmanr

    runs = pd.DataFrame({"exp": list("abcde"), "variant": ["v", "v", "w", "w", "w"], "seed": [0, 1, 0, 1, 2],
                         "recall_at_1": [0.5, 0.7, 0.6, 0.9, 0.8], "rho_test": [1.2, 0.9, 1.0, 0.3, float("nan")],
                         "pi_ratio": [0.3, 0.5, 0.4, 0.2, 0.1]})
    write_report(runs, summarize(runs), "s", tmp_path)
    stats = json.loads((tmp_path / "correlations.json").read_text())
    expected = spearmanr([1.2, 0.9, 1.0, 0.3], [0.5, 0.7, 0.6, 0.9])
    assert stats["recall_at_1~rho_test"]["spearman"] == pytest.approx(expected.statistic, abs=1e-12) == -1.0
    assert stats["recall_at_1~rho_test"]["n"] == 4
    assert stats["recall_at_1~pi_ratio"]["spearman"] == pytest.approx(spearmanr(runs["pi_ratio"], runs["recall_at_1"]).statistic, abs=1e-12)
    assert spearman(pd.Series([1.0, 2.0]), pd.Series([3.0, 4.0]))["spearman"] is None  # two points: no statement


def test_spearman_over_variant_means_matches_scipy(tmp_path):
    """Reference: scipy.stats.spearmanr on the per-variant means (hand-computed): the across-method
    statement is over one point per method, not over runs, and the figure is written."""
    from scipy.stats import spearmanr

    runs = pd.DataFrame({"exp": list("abcdefgh"), "variant": ["u", "u", "v", "v", "w", "w", "x", "x"], "seed": [0, 1] * 4,
                         "recall_at_1": [0.5, 0.7, 0.6, 0.8, 0.9, 0.7, 0.2, 0.4],   # means 0.6, 0.7, 0.8, 0.3
                         "rho_train_skip1": [1.0, 1.2, 0.8, 1.0, 0.2, 0.4, 2.0, 1.0],  # means 1.1, 0.9, 0.3, 1.5
                         "rho_test": [0.1, 0.3, 0.3, 0.5, 0.5, 0.7, 0.9, 0.7],     # means 0.2, 0.4, 0.6, 0.8
                         "nmi": [0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.4, 0.4], "pi_ratio": [0.3, 0.5, 0.4, 0.2, 0.1, 0.1, 0.6, 0.6]})
    written = write_report(runs, summarize(runs), "s", tmp_path)
    stats = json.loads((tmp_path / "correlations.json").read_text())
    r1_means, train_means, test_means = [0.6, 0.7, 0.8, 0.3], [1.1, 0.9, 0.3, 1.5], [0.2, 0.4, 0.6, 0.8]
    expected = spearmanr(train_means, r1_means)
    assert stats["means:recall_at_1~rho_train_skip1"]["spearman"] == pytest.approx(expected.statistic, abs=1e-12) == -1.0
    assert stats["means:recall_at_1~rho_train_skip1"]["p_value"] == pytest.approx(expected.pvalue, abs=1e-12)
    assert stats["means:recall_at_1~rho_train_skip1"]["n"] == 4
    assert stats["means:recall_at_1~rho_test"]["spearman"] == pytest.approx(spearmanr(test_means, r1_means).statistic, abs=1e-12)
    assert stats["means:nmi~rho_test"]["spearman"] == pytest.approx(spearmanr(test_means, [0.5, 0.6, 0.7, 0.4]).statistic, abs=1e-12)
    assert stats["means:pi_ratio~rho_train_skip1"]["spearman"] == pytest.approx(
        spearmanr(train_means, [0.4, 0.3, 0.1, 0.6]).statistic, abs=1e-12)
    assert tmp_path / "means_vs_rho.png" in written and (tmp_path / "means_vs_rho.png").stat().st_size > 0


def test_last_recorded_value():
    assert last_recorded("epoch,train_rho_skip1\n1,0.5\n2,0.4\n3,\n", "train_rho_skip1") == 0.4
    assert last_recorded("epoch,train_rho_skip1\n1,\n", "train_rho_skip1") is None
    assert last_recorded("epoch,loss\n1,0.3\n", "train_rho_skip1") is None and last_recorded(None, "x") is None


def test_exp_show_json_is_parsed():
    """Reference: the shape of `dvc exp show --json` (DVC 3): finished experiments only."""
    run = {"rev": "e1", "name": "s-a-s0", "error": None, "data": {
        "rev": "e1", "params": {"params.yaml": {"data": {"train": {"seed": 0}}}},
        "metrics": {"metrics/eval.json": {"data": {"recall_at_1": 0.5}}}}, "experiments": None}
    running = {"revs": [{**run, "rev": "e2", "name": "s-b-s0"}], "executor": {"state": "running"}, "name": "s-b-s0"}
    data = [{"rev": "workspace", "name": None, "data": {}, "experiments": None},
            {"rev": "base1", "name": "main", "data": {}, "experiments": [{"revs": [run], "executor": None, "name": "s-a-s0"}, running]}]
    exps = parse_exp_show(data)
    assert list(exps) == ["s-a-s0"]
    assert exps["s-a-s0"] == Experiment("s-a-s0", "e1", "base1", {"train": {"seed": 0}}, {"metrics/eval.json": {"recall_at_1": 0.5}})


# --- sweeps of real DVC experiments (slow) ------------------------------------------------------

STUB = ROOT / "tests" / "sweep_stub"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def stub_project(repo: Path) -> Path:
    """A git + DVC repository whose pipeline is the stub stage, with the project's dml package and
    params.yaml (model logging off: the stub has no model)."""
    shutil.copytree(ROOT / "dml", repo / "dml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(STUB / "stage.py", repo / "stage.py")
    # stored under another name: a dvc.yaml anywhere in this repository would join its pipeline
    shutil.copy(STUB / "pipeline.yaml", repo / "dvc.yaml")
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text().replace("log_model: true", "log_model: false"))
    (repo / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.dml/\n/reports/\n/metrics/\n__pycache__/\n")
    git(repo, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / ".dvcignore").write_text("/.dml\n/reports\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "stub pipeline")
    return repo


def run_sweep(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PREFECT_HOME": str(repo.parent / "prefect-home"), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    full_env.pop("DVC_ROOT", None)
    result = subprocess.run([sys.executable, "-m", "pipelines.sweep", "--root", str(repo), *args], cwd=ROOT,
                            env=full_env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"sweep failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


def ran(result: subprocess.CompletedProcess) -> list[str]:
    return sorted(line.split(":")[0] for line in result.stdout.splitlines() if ": ran in " in line)


TINY_SWEEP = """\
    name: tiny
    base: {optim.lr: 0.002}
    variants:
      - {name: dist, overrides: {miner.name: distance}}
      - {name: p0.2, overrides: {miner.name: rho_distance, miner.rho_distance.p: 0.2}}
    seeds: [0, 1]
    concurrency: 2
    """


@pytest.mark.e2e
def test_sweep_runs_resumes_reports_and_tracks(tmp_path):
    """A 2 variants x 2 seeds sweep of DVC experiments: all four run (params.yaml byte-identical
    afterwards), their metrics are the stub's formulas, the report holds the hand-computed table;
    rerun, nothing runs; one experiment deleted, only it runs again. MLflow: one run per
    experiment, named by what differs from the committed params.yaml, tagged with sweep and
    variant, nested under the sweep's run, which holds the report."""
    import mlflow

    repo = stub_project(tmp_path / "repo")
    write(repo / "sweeps/tiny.yaml", TINY_SWEEP)
    before = (repo / "params.yaml").read_bytes()
    first = run_sweep(repo, "sweeps/tiny.yaml")
    assert ran(first) == ["tiny-dist-s0", "tiny-dist-s1", "tiny-p0.2-s0", "tiny-p0.2-s1"], first.stdout
    assert (repo / "params.yaml").read_bytes() == before
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    listed = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=repo, capture_output=True, text=True)
    assert sorted(listed.stdout.split()) == ["tiny-dist-s0", "tiny-dist-s1", "tiny-p0.2-s0", "tiny-p0.2-s1"]

    table = pd.read_csv(repo / "reports/tiny/table.csv", index_col="variant")
    assert table.loc["dist", "n"] == 2 and table.loc["p0.2", "n"] == 2
    assert table.loc["dist", "recall_at_1_mean"] == pytest.approx(0.505, abs=1e-12)  # 0.5 + 0.01 * mean seed
    assert table.loc["p0.2", "recall_at_1_mean"] == pytest.approx(0.525, abs=1e-12)  # + 0.1 * 0.2
    assert table.loc["p0.2", "recall_at_1_std"] == pytest.approx(math.sqrt(0.00005), abs=1e-12)  # 0.01 apart
    assert table.loc["p0.2", "rho_train_skip1_mean"] == pytest.approx(0.6, abs=1e-12)  # the curve's last value
    assert table.loc["dist", "rho_test_mean"] == pytest.approx(1.0005, abs=1e-12)
    assert table.loc["p0.2", "pi_ratio_mean"] == pytest.approx(0.7, abs=1e-12)

    shown = run_sweep(repo, "--show", "sweeps/tiny.yaml").stdout.splitlines()
    assert shown[0].split() == ["exp", "state", "miner.name", "miner.rho_distance.p", "train.seed", "R@1", "MAP@R", "NMI",
                                "rho", "(test)", "rho", "(train,", "skip", "1)", "pi_ratio"]
    assert shown[2].split()[:6] == ["tiny-p0.2-s0", "done", "rho_distance", "0.2", "0", "0.52"]

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("glyphs-dml").experiment_id])
    parent = [r for r in runs if r.data.tags.get("dml.role") == "sweep"]
    children = {r.data.tags["dvc.exp_name"]: r for r in runs if "dvc.exp_name" in r.data.tags}
    assert len(parent) == 1 and parent[0].info.status == "FINISHED" and len(children) == 4 and len(runs) == 5
    artifacts = {a.path for a in client.list_artifacts(parent[0].info.run_id, "report")}
    assert {"report/table.csv", "report/table.md", "report/r1_vs_rho.png"} <= artifacts
    child = children["tiny-p0.2-s1"]
    # what differs from the committed params.yaml (the project's, log_model aside) plus the sweep's base: the variant's overrides
    assert child.data.tags["mlflow.runName"] == "miner=rho_distance p=0.2 seed=1"
    assert child.data.tags["dml.variant"] == "p0.2" and child.data.tags["dml.sweep"] == "tiny"
    assert child.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
    assert child.data.tags["mlflow.source.git.commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert child.data.tags["mlflow.source.name"] == "dvc.yaml:stub"
    assert child.data.metrics["eval/recall_at_1"] == pytest.approx(0.53, abs=1e-12)

    again = run_sweep(repo, "sweeps/tiny.yaml")
    assert ran(again) == [] and again.stdout.count("skipped (done)") == 4
    subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", "tiny-dist-s1"], cwd=repo, check=True, capture_output=True)
    resumed = run_sweep(repo, "sweeps/tiny.yaml")
    assert ran(resumed) == ["tiny-dist-s1"]
    assert (repo / "params.yaml").read_bytes() == before


@pytest.mark.e2e
def test_failures_are_reported_and_only_transient_ones_retried(tmp_path):
    """One variant fails in its stage (a params-level failure the validation cannot see): it is
    reported, tried once, and the other variant still runs; a first attempt that fails like a
    taken lock is retried and succeeds. The sweep exits 1 and its parent run is FAILED."""
    repo = stub_project(tmp_path / "repo")
    write(repo / "sweeps/fail.yaml", """\
        name: fail
        variants:
          - {name: bad, overrides: {optim.lr: 0.0123}}
          - {name: good, overrides: {optim.lr: 0.002}}
        seeds: [0]
        concurrency: 1
        """)
    attempts, flaky = tmp_path / "attempts.txt", tmp_path / "flaky.txt"
    flaky.write_text("fail-bad-s0\n")  # the bad one fails for its own reason only
    result = run_sweep(repo, "sweeps/fail.yaml", env={"STUB_ATTEMPTS": str(attempts), "STUB_FLAKY": str(flaky)}, check=False)
    assert result.returncode == 1
    assert re.search(r"^fail-bad-s0: failed: dvc exp run exited \d+: error in stage stub: optim.lr 0.0123", result.stdout, re.M)
    assert ran(result) == ["fail-good-s0"]
    assert sorted(attempts.read_text().split()) == ["fail-bad-s0", "fail-good-s0", "fail-good-s0"]
    assert "sweep fail: 1 of 2 runs done, 1 failed" in result.stdout
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("glyphs-dml").experiment_id])
    assert [r.info.status for r in runs if r.data.tags.get("dml.role") == "sweep"] == ["FAILED"]
