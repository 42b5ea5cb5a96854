"""The one typed schema of ``params.yaml``.

Every stage calls :func:`load_params` first; it validates the *whole* file, so a malformed
key fails every stage before that stage writes anything. Parameters reach library code only as
these (frozen) models, never through a global options object.

Components with per-method knobs (losses, miners, samplers) have a ``name`` and one small typed
model per method, defined next to that family's code (``dml/<family>/config.py``, torch-free so
the schema is checked without importing torch); ``tests/test_config.py`` asserts that each
family's names match its registry. Only the selected methods' knobs form the *training config*
(:meth:`Params.training_config`), which the ``configure`` stage writes for DVC: editing a knob
of a method that is not selected changes no training input and retrains nothing. Sections read
by one family or stage group live with it (``dml/data/config.py``, ``dml/retrieval_config.py``);
this module assembles them, so it sits above the families and below everything that reads Params.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from dml.data.config import DataConfig, PreprocessConfig, TransformsConfig
from dml.errors import ConfigError
from dml.losses.config import LossSection
from dml.miners.config import MinerSection
from dml.models.config import ModelConfig
from dml.paths import PARAMS
from dml.retrieval_config import EvalConfig, GalleryConfig, IndexConfig, SpectrumConfig
from dml.samplers.config import BatchMatchKnobs, EmbeddedSamplerKnobs, SamplerSection
from dml.schema import Section
from dml.training_config import DistributedConfig, MonitorConfig, OptimConfig, PretrainConfig, TrainConfig

class LoaderConfig(Section):
    """How images are loaded, not what is learned: results are identical for any setting (see
    dml/data/loading.py), so no stage declares this section and changing it reruns nothing."""

    num_workers: int = Field(0, ge=0, description="DataLoader worker processes; 0 = decode in the training process")
    prefetch_factor: int = Field(2, ge=1, description="batches each worker loads ahead")
    in_memory_mib: int = Field(
        256, ge=0, description="a split whose decoded images (all of one size) fit in this many MiB is decoded once and "
        "held in memory (the glyphs: 11 MiB); larger ones stream from their files; 0 = always stream"
    )


class EmbedConfig(Section):
    batch_size: int = Field(128, ge=1, description="images per forward pass (CPU: 128 is faster than 512, with identical vectors here)")


class TrackingConfig(Section):
    experiment: str = Field("glyphs-dml", min_length=1)
    uri: str | None = Field(None, description="MLflow tracking URI; null = sqlite mlflow.db at the repository root")
    log_model: bool = True


TRAINING_SECTIONS = ("model", "loss", "miner", "sampler", "optim", "train", "transforms", "monitor", "distributed")
WATCHING_SECTIONS = ("monitor",)  # read by train for its curve only: no weight depends on them
RUNTIME_SECTIONS = ("distributed",)  # how the run is spread: not the recipe of the weights (model file, fingerprint)
METHOD_SECTIONS = ("loss", "miner", "sampler")  # a name plus one knob model per method
TUPLE_WORDS = {"triplets": "triplets", "npair": "N-pair sets", "lifted": "lifted-structure sets"}


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return out


class Params(Section):
    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    loss: LossSection = LossSection()
    miner: MinerSection = MinerSection()
    sampler: SamplerSection = SamplerSection()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    monitor: MonitorConfig = MonitorConfig()
    distributed: DistributedConfig = DistributedConfig()
    pretrain: PretrainConfig = PretrainConfig()
    transforms: TransformsConfig = TransformsConfig()
    loader: LoaderConfig = LoaderConfig()
    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    eval: EvalConfig = EvalConfig()
    spectrum: SpectrumConfig = SpectrumConfig()
    gallery: GalleryConfig = GalleryConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _resolve_auto(self) -> Params:
        """``miner.name: auto`` -> the loss's default miner; ``model.normalize: auto`` -> what the
        loss runs on. Everything downstream sees concrete values."""
        knobs = self.loss.knobs
        resolved = self
        if self.miner.name == "auto":
            resolved = resolved.model_copy(update={"miner": self.miner.model_copy(update={"name": knobs.default_miner})})
        if self.model.normalize == "auto":
            model = self.model.model_copy(update={"normalize": knobs.normalized_embeddings})
            resolved = resolved.model_copy(update={"model": model})
        return resolved

    @model_validator(mode="after")
    def _components_fit(self) -> Params:
        """The loss, the miner and the model's normalisation must work together."""
        loss, miner = self.loss.knobs, self.miner.knobs
        pair = f"loss.name={self.loss.name!r} with miner.name={self.miner.name!r}"
        if loss.consumes != miner.produces:
            wants = TUPLE_WORDS[loss.consumes] if loss.consumes else "no miner (it reads the whole batch)"
            gives = TUPLE_WORDS[miner.produces] if miner.produces else "nothing"
            raise ValueError(f"miner.name: {pair}: the loss takes {wants}, the miner gives {gives}; "
                             f"use miner.name: {loss.default_miner} (or auto)")
        if self.model.normalize != loss.normalized_embeddings:
            state = "normalised" if loss.normalized_embeddings else "unnormalised"
            raise ValueError(f"model.normalize: {str(self.model.normalize).lower()} contradicts loss.name={self.loss.name!r}, "
                             f"which runs on {state} embeddings (set model.normalize: auto)")
        if miner.needs_normalized and not self.model.normalize:
            raise ValueError(f"miner.name: {pair}: the miner assumes L2-normalised embeddings, the loss runs on unnormalised ones")
        return self

    @model_validator(mode="after")
    def _batch_fits_sampler(self) -> Params:
        """SPC samplers fill a batch with whole classes; embedded samplers choose it from a pool
        that must hold a batch's worth of picks (coresets) or of class groups (batch matching)."""
        name, knobs, batch_size = self.sampler.name, self.sampler.knobs, self.train.batch_size
        spc = getattr(knobs, "samples_per_class", None)
        if spc is not None and batch_size % spc:
            raise ValueError(f"train.batch_size: {batch_size} is not a multiple of sampler.{name}.samples_per_class={spc}")
        if spc is not None and batch_size // spc < 2 and self.loss.knobs.needs_two_classes:
            raise ValueError(
                f"train.batch_size: {batch_size} with sampler.{name}.samples_per_class={spc} gives "
                f"batches of one class, from which loss.name={self.loss.name!r} cannot form a single tuple"
            )
        if isinstance(knobs, EmbeddedSamplerKnobs):
            if isinstance(knobs, BatchMatchKnobs):
                needed, what = batch_size, "images"
            else:
                needed, what = batch_size // knobs.samples_per_class, "picks"
            if knobs.pool_size < needed:
                raise ValueError(f"sampler.{name}.pool_size: {knobs.pool_size} cannot hold a batch's {needed} {what} "
                                 f"(train.batch_size={batch_size}, samples_per_class={knobs.samples_per_class})")
            ahead = self.loader.num_workers * self.loader.prefetch_factor
            if self.loader.num_workers and knobs.delay < ahead:
                raise ValueError(f"sampler.{name}.delay: {knobs.delay} is below the {ahead} batches the loader chooses ahead "
                                 f"(loader.num_workers x loader.prefetch_factor); set delay >= {ahead} or loader.num_workers: 0")
        return self

    @model_validator(mode="after")
    def _batch_splits_over_ranks(self) -> Params:
        dist = self.distributed
        if self.train.batch_size % dist.world_size:
            raise ValueError(f"train.batch_size: {self.train.batch_size} is not divisible by the world size {dist.world_size} "
                             f"(distributed.nproc_per_node {dist.nproc_per_node} x distributed.nnodes {dist.nnodes}): "
                             f"it is the global batch, split evenly over the ranks")
        if dist.node_rank >= dist.nnodes:
            raise ValueError(f"distributed.node_rank: {dist.node_rank} is not below distributed.nnodes={dist.nnodes}")
        return self

    @model_validator(mode="after")
    def _spectrum_fits_embedding(self) -> Params:
        if max(self.spectrum.skip_largest) >= self.model.embed_dim:
            raise ValueError(
                f"spectrum.skip_largest: {max(self.spectrum.skip_largest)} drops every singular value of "
                f"model.embed_dim={self.model.embed_dim}; use values below it"
            )
        return self

    @model_validator(mode="after")
    def _pq_fits_embedding(self) -> Params:
        if self.index.pq_m and self.model.embed_dim % self.index.pq_m:
            raise ValueError(f"index.pq_m: {self.index.pq_m} does not divide model.embed_dim={self.model.embed_dim}")
        return self

    def training_config(self) -> dict[str, dict[str, Any]]:
        """Everything that shapes a trained model, with only the *selected* loss, miner and
        sampler's knobs (``{"loss": {"name": "margin", "margin": {...}}, ...}``), resolved. The
        configure stage writes it to configs/train.json, the file the train stage depends on; it
        is also the training fingerprint's and the saved model's record of the run."""
        out: dict[str, dict[str, Any]] = {}
        for name in TRAINING_SECTIONS:
            section = getattr(self, name)
            if name in METHOD_SECTIONS:
                out[name] = {"name": section.name, section.name: section.knobs.model_dump(mode="json")}
            else:
                out[name] = section.model_dump(mode="json")
        return out

    def weights_config(self) -> dict[str, dict[str, Any]]:
        """The training config without what only watches training or spreads it over processes:
        what the saved model records."""
        return {name: section for name, section in self.training_config().items()
                if name not in WATCHING_SECTIONS + RUNTIME_SECTIONS}

    def run_config(self) -> dict[str, dict[str, Any]]:
        """The training config without how it is spread over processes: what a checkpoint belongs
        to (its fingerprint), so that it resumes at any world size."""
        return {name: section for name, section in self.training_config().items() if name not in RUNTIME_SECTIONS}

    def flat(self) -> dict[str, Any]:
        """``{"loss.name": "margin", "loss.margin.alpha": 0.2, "eval.recall_at": "1,2,4,8", ...}``
        for experiment trackers: the training config (selected methods' knobs only) and every
        other section."""
        nested = {name: self.training_config()[name] if name in TRAINING_SECTIONS else getattr(self, name).model_dump(mode="json")
                  for name in type(self).model_fields}
        return _flatten(nested)


def _format_error(path: Path, err: ValidationError) -> str:
    """The first problem as ``params.yaml: section.key: what is wrong (got value)``."""
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "literal_error":
        msg = f"unknown value {first['input']!r}; expected one of {first['ctx']['expected']}"
    elif first["type"] != "missing" and not isinstance(first.get("input"), dict):
        msg = f"{msg} (got {first['input']!r})"
    # Cross-field checks name their keys themselves ("train.batch_size: ...").
    where = f"{loc}: " if loc and not msg.startswith(loc) else ""
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {where}{msg}{more}"


def parse_params(raw: Any, path: Path | str = PARAMS) -> Params:
    path = Path(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(path, err)) from None


def load_params(path: Path | str = PARAMS) -> Params:
    """Read and validate params.yaml; raise :class:`ConfigError` with one line naming the culprit."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (run from the repository root)")
    return parse_params(read_yaml(path), path)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's content with dotted-key overrides set (missing sections created, for the
    schema to reject as unknown keys)."""
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = copy.deepcopy(value)
    return out


def read_yaml(path: Path | str) -> Any:
    """A params-style YAML file read as DVC reads and writes it (YAML 1.2, ruamel): ``dvc exp run
    -S`` rewrites params.yaml with ruamel, which writes the string ``"off"`` unquoted, and a YAML 1.1
    reader (PyYAML) would take that ``off`` for False. Raises :class:`ConfigError` naming the line."""
    from ruamel.yaml import YAML, YAMLError

    path = Path(path)
    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', None) or err}") from None

