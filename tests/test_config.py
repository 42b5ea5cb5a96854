"""The params.yaml schema: the shipped file validates, bad input fails with one line naming the
key, and every component name the schema accepts has a registry entry (and vice versa)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from dml.config import (
    Section,
    ModelConfig,
    OptimConfig,
    Params,
    load_params,
    parse_params,
)
from dml.errors import ConfigError
from dml.losses.config import LossSection
from dml.losses.registry import LOSSES
from dml.miners.config import MinerSection
from dml.miners.registry import MINERS
from dml.models import MODELS
from dml.samplers.config import SamplerSection
from dml.samplers.registry import SAMPLERS
from dml.training.metric import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_validate_and_state_every_default():
    """params.yaml is complete: it lists every key of the schema, so the file alone documents a run."""
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    def assert_complete(raw_section, model, where):
        assert set(raw_section) == set(model.model_fields), where
        for key, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
                assert_complete(raw_section[key], field.annotation, f"{where}.{key}")

    for section, field in Params.model_fields.items():
        assert_complete(raw[section], field.annotation, section)
    assert raw["miner"]["name"] == "auto" and raw["model"]["normalize"] == "auto"
    assert params.loss.name == "margin" and params.miner.name == "distance" and params.model.normalize is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"loss": {"name": "focal"}}, "params.yaml: loss.name: unknown value 'focal'; expected one of 'triplet', 'contrastive'"),
        ({"miner": {"nam": "random"}}, "params.yaml: miner.nam: unknown key"),
        ({"train": {"epochs": "many"}}, "params.yaml: train.epochs: Input should be a valid integer"),
        ({"train": {"epochs": 0}}, "params.yaml: train.epochs: Input should be greater than or equal to 1 (got 0)"),
        ({"miner": {"rho_distance": {"p": 1.5}}}, "params.yaml: miner.rho_distance.p: Input should be less than or equal to 1"),
        ({"miner": {"rho_p": 0.3}}, "params.yaml: miner.rho_p: unknown key"),
        ({"loss": {"arcface": {"scale": "big"}}}, "params.yaml: loss.arcface.scale: Input should be a valid number"),
        ({"loss": {"margin": {"optim": {"lr": 0}}}}, "params.yaml: loss.margin.optim.lr: Input should be greater than 0"),
        ({"optim": {"lr": float("inf")}}, "params.yaml: optim.lr: must be a finite number"),
        ({"miner": {"distance": {"lower_cutoff": 1.5}}}, "params.yaml: miner.distance: upper_cutoff 1.4 must exceed lower_cutoff 1.5"),
        (
            {"loss": {"name": "arcface"}, "miner": {"name": "distance"}},
            "params.yaml: miner.name: loss.name='arcface' with miner.name='distance': the loss takes no miner "
            "(it reads the whole batch), the miner gives triplets; use miner.name: none (or auto)",
        ),
        (
            {"loss": {"name": "lifted"}, "miner": {"name": "npair"}},
            "params.yaml: miner.name: loss.name='lifted' with miner.name='npair': the loss takes lifted-structure sets, "
            "the miner gives N-pair sets; use miner.name: lifted (or auto)",
        ),
        ({"loss": {"name": "margin"}, "miner": {"name": "none"}}, "params.yaml: miner.name: loss.name='margin' with miner.name='none'"),
        (
            {"loss": {"name": "npair"}, "model": {"normalize": True}},
            "params.yaml: model.normalize: true contradicts loss.name='npair', which runs on unnormalised embeddings",
        ),
        (
            {"loss": {"name": "triplet", "triplet": {}}, "model": {"normalize": False}},
            "params.yaml: model.normalize: false contradicts loss.name='triplet', which runs on normalised embeddings",
        ),
        (
            {"loss": {"name": "npair", "npair": {"normalize_embeddings": True}}, "miner": {"name": "distance"}},
            "params.yaml: miner.name: loss.name='npair' with miner.name='distance': the loss takes N-pair sets",
        ),
        (
            {"train": {"batch_size": 110}, "sampler": {"class_balanced": {"samples_per_class": 4}}},
            "params.yaml: train.batch_size: 110 is not a multiple of sampler.class_balanced.samples_per_class=4",
        ),
        (
            {"train": {"batch_size": 111}, "sampler": {"name": "class_random"}},
            "params.yaml: train.batch_size: 111 is not a multiple of sampler.class_random.samples_per_class=2",
        ),
        (
            {"sampler": {"name": "ddm", "ddm": {"pool_size": 100}}},
            "params.yaml: sampler.ddm.pool_size: 100 cannot hold a batch's 112 images (train.batch_size=112, samples_per_class=2)",
        ),
        (
            {"sampler": {"name": "greedy_coreset", "greedy_coreset": {"pool_size": 50}}},
            "params.yaml: sampler.greedy_coreset.pool_size: 50 cannot hold a batch's 56 picks",
        ),
        ({"sampler": {"frd": {"candidates": 0}}}, "params.yaml: sampler.frd.candidates: Input should be greater than or equal to 1"),
        ({"eval": {"recall_at": [1, 0]}}, "params.yaml: eval.recall_at: every k must be >= 1"),
        ({"gallery": {"queries": 0, "worst": 0}}, "params.yaml: gallery.queries: queries and worst are both 0"),
        ({"gallery": {"thumb_px": 8}}, "params.yaml: gallery.thumb_px: Input should be greater than or equal to 16"),
        ({"evaluation": {}}, "params.yaml: evaluation: unknown key"),
        (
            {"data": {"train_fraction": 0.3, "glyphs": {"split_by": "script"}}},
            "params.yaml: data.train_fraction: 0.3 has no effect with data.glyphs.split_by: script",
        ),
        ({"data": {"glyphs": {"split_by": "block"}}}, "params.yaml: data.glyphs.split_by: unknown value 'block'"),
        ({"pretrain": {"lr": 0}}, "params.yaml: pretrain.lr: Input should be greater than 0"),
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


@pytest.mark.parametrize(
    ("loss", "miner", "normalize"),
    [("margin", "distance", True), ("softmax", "none", True), ("multisimilarity", "none", True),
     ("npair", "npair", False), ("angular", "npair", False), ("lifted", "lifted", False), ("proxyanchor", "none", True)],
)
def test_auto_resolves_to_the_losses_default_miner_and_normalisation(loss, miner, normalize):
    """Reference: the method zoo's table (default miner per loss; N-pair, angular and lifted
    unnormalised in the paper)."""
    params = parse_params({"loss": {"name": loss}, "miner": {"name": "auto"}, "model": {"normalize": "auto"}})
    assert (params.miner.name, params.model.normalize) == (miner, normalize)
    assert params.training_config()["miner"] == {"name": miner, miner: {} if miner != "distance" else {"lower_cutoff": 0.5, "upper_cutoff": 1.4}}


def test_training_config_holds_only_the_selected_methods_knobs():
    """Reference: the definition: changing an unselected method's knob leaves the training config
    (configs/train.json, the fingerprint) unchanged; changing the selected one's changes it."""
    base = parse_params({})
    assert set(base.training_config()["loss"]) == {"name", "margin"}
    assert parse_params({"loss": {"arcface": {"scale": 30}}, "miner": {"semihard": {"margin": 0.5}}}).training_config() == base.training_config()
    assert parse_params({"loss": {"margin": {"alpha": 0.1}}}).training_config() != base.training_config()


def test_unselected_sampler_constraints_are_not_checked():
    """Reference: the definition of the training config: only the selected sampler's knobs shape
    a run, so an unselected sampler's pool that could not hold a batch is no error."""
    assert parse_params({"sampler": {"ddm": {"pool_size": 100}, "class_random": {"samples_per_class": 5}}}).sampler.name == "class_balanced"


def test_yaml_scientific_notation_is_a_float():
    """PyYAML reads ``1e-5`` as a string; the schema still accepts it as the float it means."""
    assert parse_params({"optim": {"lr": "1e-5"}}).optim.lr == pytest.approx(1e-5)


def test_flat_params_for_trackers():
    flat = parse_params({"miner": {"name": "rho_distance", "rho_distance": {"p": 0.4}}}).flat()
    assert flat["miner.name"] == "rho_distance"
    assert flat["miner.rho_distance.p"] == 0.4
    assert flat["loss.margin.optim.lr"] == 5e-4
    # only the selected methods' knobs: an unselected method's knob is no param of the run
    assert not any(key.startswith(("miner.distance.", "loss.triplet.", "sampler.random")) for key in flat)
    assert flat["eval.recall_at"] == "1,2,4,8"


@pytest.mark.parametrize(
    ("config", "registry"),
    [(LossSection, LOSSES), (MinerSection, MINERS), (ModelConfig, MODELS), (SamplerSection, SAMPLERS), (OptimConfig, OPTIMIZERS)],
)
def test_schema_names_match_registries(config, registry):
    names = set(typing.get_args(config.model_fields["name"].annotation))
    # Literal["a", "b"] | Literal["auto"] nests one level deeper
    flat = {n for name in names for n in (typing.get_args(name) or (name,))} - {"auto"}
    assert flat == set(registry)
    # every method of a family has its own knob section under its name
    if config in (LossSection, MinerSection, SamplerSection):
        assert set(config.model_fields) - {"name"} == set(registry)


def test_registry_lookup_names_the_key_and_choices():
    """Library callers that bypass the schema still get the one-line error."""
    from dml.losses.registry import build_loss

    with pytest.raises(ValueError, match=r"^loss.name: unknown 'focal'; expected one of \['angular', "):
        build_loss(LossSection.model_construct(name="focal"), num_classes=3, embed_dim=8)
