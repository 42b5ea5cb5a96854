"""The params.yaml schema: the shipped file validates, bad input fails with one line naming the
key, and every component name the schema accepts has a registry entry (and vice versa)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from dml.config import (
    ConfigError,
    LossConfig,
    MinerConfig,
    ModelConfig,
    OptimConfig,
    Params,
    SamplerConfig,
    load_params,
    parse_params,
)
from dml.losses import LOSSES
from dml.miners import MINERS
from dml.models import MODELS
from dml.samplers import SAMPLERS
from dml.training import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_validate_and_state_every_default():
    """params.yaml is complete: it lists every key of the schema, so the file alone documents a run."""
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, model in Params.model_fields.items():
        assert set(raw[section]) == set(model.annotation.model_fields), section
    assert params.loss.name == "margin" and params.miner.name == "distance"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"loss": {"name": "focal"}}, "params.yaml: loss.name: unknown value 'focal'; expected one of 'margin' or 'triplet'"),
        ({"miner": {"nam": "random"}}, "params.yaml: miner.nam: unknown key"),
        ({"train": {"epochs": "many"}}, "params.yaml: train.epochs: Input should be a valid integer"),
        ({"train": {"epochs": 0}}, "params.yaml: train.epochs: Input should be greater than or equal to 1 (got 0)"),
        ({"miner": {"rho_p": 1.5}}, "params.yaml: miner.rho_p: Input should be less than or equal to 1"),
        ({"train": {"batch_size": 110}, "sampler": {"samples_per_class": 4}}, "params.yaml: train.batch_size: 110 is not a multiple"),
        ({"eval": {"recall_at": [1, 0]}}, "params.yaml: eval.recall_at: every k must be >= 1"),
        ({"evaluation": {}}, "params.yaml: evaluation: unknown key"),
        ([1, 2], "params.yaml: top level must be a mapping"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 3\n bad indent: [\n")
    with pytest.raises(ConfigError, match=r"params.yaml: line \d+ invalid YAML"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "params.yaml")


def test_yaml_scientific_notation_is_a_float():
    """PyYAML reads ``1e-5`` as a string; the schema still accepts it as the float it means."""
    assert parse_params({"optim": {"lr": "1e-5"}}).optim.lr == pytest.approx(1e-5)


def test_flat_params_for_trackers():
    flat = parse_params({"miner": {"name": "rho_distance", "rho_p": 0.4}}).flat()
    assert flat["miner.name"] == "rho_distance"
    assert flat["miner.rho_p"] == 0.4
    assert flat["eval.recall_at"] == "1,2,4,8"


@pytest.mark.parametrize(
    ("config", "registry"),
    [(LossConfig, LOSSES), (MinerConfig, MINERS), (ModelConfig, MODELS), (SamplerConfig, SAMPLERS), (OptimConfig, OPTIMIZERS)],
)
def test_schema_names_match_registries(config, registry):
    assert set(typing.get_args(config.model_fields["name"].annotation)) == set(registry)


def test_registry_lookup_names_the_key_and_choices():
    """Library callers that bypass the schema still get the one-line error."""
    from dml.losses import build_loss

    with pytest.raises(ValueError, match=r"^loss.name: unknown 'focal'; expected one of \['margin', 'triplet'\]$"):
        build_loss(LossConfig.model_construct(name="focal"), num_classes=3)
