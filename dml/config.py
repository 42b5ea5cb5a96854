"""The one typed schema of ``params.yaml``.

Every stage calls :func:`load_params` first; it validates the *whole* file, so a malformed
key fails every stage before that stage writes anything. Parameters reach library code only as
these (frozen) models, never through a global options object.

Components with per-method knobs (losses, miners, samplers) have a ``name`` and one small typed
model per method, defined next to that family's code (``dml/<family>/config.py``, torch-free so
the schema is checked without importing torch); ``tests/test_config.py`` asserts that each
family's names match its registry. Only the selected methods' knobs form the *training config*
(:meth:`Params.training_config`), which the ``configure`` stage writes for DVC: editing a knob
of a method that is not selected changes no training input and retrains nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from dml.data.config import DataConfig
from dml.errors import ConfigError
from dml.losses.config import LossSection
from dml.miners.config import MinerSection
from dml.models.config import ModelConfig
from dml.paths import PARAMS
from dml.samplers.config import BatchMatchKnobs, EmbeddedSamplerKnobs, SamplerSection
from dml.schema import Section

class PreprocessConfig(Section):
    """Stage ``preprocess``: the decode mode, an optional resize cache of the prepared images
    (real datasets' full-size JPEGs decode slowly; a downscaled copy keeps training I/O-light),
    and the train split's channel statistics (see dml/data/preprocess.py)."""

    channels: Literal[1, 3] = Field(1, description="decode mode: 1 = grayscale, 3 = RGB")
    resize: int | None = Field(
        None, ge=8, le=4096,
        description="shorter side (pixels) of the cached copies, aspect ratio kept, never upscaled; null = no cache",
    )
    format: Literal["jpeg", "png", "webp"] = Field("jpeg", description="cache file format (png: lossless)")
    quality: int = Field(95, ge=1, le=100, description="jpeg / webp quality of the cache")
    workers: int = Field(2, ge=1, le=64, description="decode/resize/encode threads; the output does not depend on it")


class OptimConfig(Section):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(4e-4, ge=0.0)


class TrainConfig(Section):
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(112, ge=4)
    seed: int = Field(0, ge=0)
    num_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision of the forward pass (cuda only)")
    track_test_recall: bool = Field(True, description="log test Recall@1 after every epoch (monitoring only, selects nothing)")
    selection: Literal["auto", "last", "val"] = Field(
        "auto", description="which epoch's weights are the model: val = best validation Recall@1 (needs data.val_classes > 0), "
        "last = the final epoch, auto = val when there is a validation split, else last"
    )
    spectrum_every: int = Field(2, ge=0, description="every N epochs, rho / pi_ratio / top singular values of training embeddings; 0 = off")
    spectrum_sample: int = Field(512, ge=16, description="training images (a fixed seeded sample) the spectrum is computed on")


class PretrainConfig(Section):
    """Stage pretrain: the backbone first learns to classify the disjoint ``source`` classes
    (``data.glyphs.source_fraction``, or a manifest's split ``source``); train then starts from those
    features with a fresh embedding head. The embedded analogue of the paper's ImageNet-pretrained
    backbones (fine-tune with a low ``optim.lr``). Reads ``model`` (the backbone), ``transforms``
    and ``train.device`` / ``train.amp`` / ``train.num_threads``; its own seed, so every training seed shares one
    pretrained network, as every seed of the paper shares the ImageNet weights."""

    epochs: int = Field(0, ge=0, description="0 = off: train starts from the backbone's own initialisation")
    batch_size: int = Field(112, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(4e-4, ge=0.0)
    seed: int = Field(0, ge=0)


class TransformsConfig(Section):
    """Image geometry and augmentation (torchvision transforms.v2; see dml/data/loading.py).
    Pixel normalisation is the model's: the backbone's constants when pretrained, else the
    dataset statistics of the preprocess stage."""

    train: Literal["random_resized_crop", "shift"] = Field(
        "shift", description="random_resized_crop (the paper, real images) | shift (eval geometry + translation)"
    )
    size: int = Field(32, ge=8, description="model input side (224 in the paper)")
    resize: int = Field(32, ge=8, description="eval: Resize(shorter side) then CenterCrop(size) (256 in the paper)")
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="random_resized_crop: area fraction range")
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="random_resized_crop: aspect ratio range")
    shift: int = Field(2, ge=0, description="shift: translation in pixels, edges replicated")
    hflip: bool = Field(False, description="random horizontal flip (the paper: true; not for glyphs, mirrored letters differ)")

    @model_validator(mode="after")
    def _consistent(self) -> TransformsConfig:
        if self.resize < self.size:
            raise ValueError(f"transforms.resize: {self.resize} is smaller than transforms.size={self.size} (CenterCrop would pad)")
        for key in ("crop_scale", "crop_ratio"):
            low, high = getattr(self, key)
            if not 0 < low <= high:
                raise ValueError(f"transforms.{key}: needs 0 < low <= high, got {(low, high)}")
        return self


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
    batch_size: int = Field(512, ge=1)


class IndexConfig(Section):
    """The retrieval gallery's FAISS index (see dml/indexing.py)."""

    type: Literal["flat", "ivf", "hnsw"] = Field("flat", description="flat = exact search; ivf / hnsw = approximate")
    metric: Literal["ip", "l2"] = Field(
        "l2", description="l2 | ip (cosine for L2-normalised embeddings, the same ranking); FAISS orders exact l2 ties by id"
    )
    nlist: int = Field(64, ge=1, description="ivf: number of k-means cells")
    nprobe: int = Field(8, ge=1, description="ivf: cells visited per query")
    hnsw_m: int = Field(32, ge=2, description="hnsw: graph links per node (FAISS's M)")
    ef_construction: int = Field(40, ge=1, description="hnsw: candidate list size while building")
    ef_search: int = Field(64, ge=1, description="hnsw: candidate list size per query (efSearch)")
    pq_m: int = Field(0, ge=0, description="ivf/hnsw: product-quantiser sub-vectors; 0 = store full vectors")
    pq_nbits: int = Field(8, ge=1, le=16, description="bits per product-quantiser code; 4 = SIMD fast-scan for ivf")
    refine_factor: int = Field(
        0, ge=0, description="with pq: re-rank k x refine_factor candidates by exact distance (keeps the full vectors too); 0 = off"
    )
    seed: int = Field(0, ge=0, description="seed of the ivf / pq k-means training")
    deterministic: bool = Field(True, description="hnsw: build on one thread so the graph is reproducible")

    @model_validator(mode="after")
    def _consistent(self) -> IndexConfig:
        if self.type == "flat" and self.pq_m:
            raise ValueError("index.pq_m: product quantisation needs type ivf or hnsw (flat is exact search)")
        if self.refine_factor and not self.pq_m:
            raise ValueError("index.refine_factor: re-ranking needs product-quantised codes (index.pq_m > 0)")
        if self.type == "ivf" and self.nprobe > self.nlist:
            raise ValueError(f"index.nprobe: {self.nprobe} exceeds index.nlist={self.nlist}")
        return self


class EvalConfig(Section):
    """What the evaluator computes (see dml/evaluation.py and the metric table in the README)."""

    recall_at: tuple[int, ...] = Field((1, 2, 4, 8), min_length=1, description="Recall@k for each k")
    map_at: tuple[int, ...] = Field((1000,), description="mAP@K for each K (mAP@1000 in the paper)")
    clustering: bool = Field(True, description="k-means with k = number of classes, scored by NMI and F1")
    kmeans_seed: int = Field(0, ge=0)
    kmeans_iters: int = Field(20, ge=1)
    search: Literal["index", "exact"] = Field("index", description="neighbours from the built index or brute force")
    agreement_sample: int = Field(1000, ge=0, description="queries on which an approximate index is checked against exact search")
    block_size: int = Field(4096, ge=1, description="queries per search block (memory: block x k ids)")

    @model_validator(mode="after")
    def _positive_ks(self) -> EvalConfig:
        for key in ("recall_at", "map_at"):
            if any(k < 1 for k in getattr(self, key)):
                raise ValueError(f"eval.{key}: every k must be >= 1")
        return self


class SpectrumConfig(Section):
    skip_largest: tuple[int, ...] = Field((0, 1), min_length=1, description="rho variants: drop the k largest values")
    split: Literal["train", "test"] = "test"


class GalleryConfig(Section):
    """The retrieval gallery figure (stage gallery, plots/gallery.png; see dml/gallery.py)."""

    queries: int = Field(10, ge=0, description="rows of fixed queries: a seeded sample of test ids, the same in every run")
    worst: int = Field(5, ge=0, description="then rows of the queries whose first correct neighbour ranks worst")
    k: int = Field(8, ge=1, le=50, description="retrieved images per row")
    seed: int = Field(0, description="seed of the fixed query sample")
    thumb_px: int = Field(64, ge=16, le=256, description="thumbnail side in pixels")
    search: Literal["index", "exact"] = Field("index", description="neighbours from the built index or brute force")

    @model_validator(mode="after")
    def _some_rows(self) -> GalleryConfig:
        if self.queries + self.worst == 0:
            raise ValueError("gallery.queries: queries and worst are both 0; the gallery would have no rows")
        return self


class TrackingConfig(Section):
    experiment: str = Field("glyphs-dml", min_length=1)
    uri: str | None = Field(None, description="MLflow tracking URI; null = sqlite mlflow.db at the repository root")
    log_model: bool = True


TRAINING_SECTIONS = ("model", "loss", "miner", "sampler", "optim", "train", "transforms")
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

