"""The data family's sections of ``params.yaml``: ``data`` (stage ``prepare``: which dataset, where
it lies, and what to do with the files that are not clean RGB images), ``preprocess`` and
``transforms`` (how images reach the model). Here, not in ``dml/config.py``, so that the data
code reads its knobs without reaching up to the whole schema.

Torch-free on purpose (like ``dml/losses/config.py``): every stage validates the whole params file
first, and ``prepare`` never needs torch. ``dml/config.py`` assembles these into ``Params``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dml.schema import Section

DatasetName = Literal["glyphs", "cub200", "cars196", "sop", "inshop", "imagefolder", "manifest"]


class GlyphsConfig(Section):
    """Knobs of the generated glyphs benchmark (``data.name: glyphs``; see dml/data/glyphs.py)."""

    samples_per_class: int = Field(40, ge=2)
    image_size: int = Field(32, ge=8, le=256)
    difficulty: Literal["easy", "hard"] = "hard"
    min_fonts: int = Field(8, ge=1)
    max_classes: int | None = Field(None, ge=4, description="keep only the first N classes (tiny test configs)")
    split_by: Literal["random", "script"] = Field(
        "random",
        description="random: data.train_fraction of the shuffled classes train; script: a distribution shift, classes "
        "without a letter (arrows, math operators, symbols, digits) train, letter classes (Latin, Greek, Cyrillic, "
        "Armenian, Georgian) test",
    )
    source_fraction: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="share of the shuffled classes held out as split 'source' (neither train nor test, every script): "
        "the disjoint set `pretrain` trains on",
    )


class DataConfig(Section):
    """Dataset generation / preparation (stage ``prepare``)."""

    name: DatasetName = "glyphs"
    root: str = Field(
        "data/raw",
        min_length=1,
        description="the extracted dataset folder, a folder containing it, or its official archive "
        "(.tgz/.tar/.tar.gz/.zip); for manifest: the CSV/Parquet file. Unused by glyphs",
    )
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="verify the archive at data.root")
    max_unpacked_gb: float = Field(
        20.0, gt=0, description="refuse an archive that unpacks to more than this many GB (the official ones: a few)"
    )
    max_compression_ratio: float = Field(
        100.0, gt=1, description="refuse an archive that unpacks to more than this many times its own size (a "
        "decompression bomb; image datasets barely compress)"
    )
    seed: int = Field(0, ge=0)
    train_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="share of the classes that train (glyphs, imagefolder, manifest without split)"
    )
    val_classes: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of the train classes held out as split val (class-disjoint); 0 = paper"
    )
    on_bad_image: Literal["error", "skip"] = Field("error", description="missing, undecodable or truncated files")
    on_non_rgb: Literal["convert", "error", "skip"] = Field(
        "convert", description="grayscale / CMYK / palette / RGBA images: convert to RGB at load time, fail or drop"
    )
    check_workers: int = Field(4, ge=1, le=64, description="threads decoding every image of a real dataset")
    glyphs: GlyphsConfig = GlyphsConfig()

    @model_validator(mode="after")
    def _split_knobs_used(self) -> DataConfig:
        # a knob that would silently do nothing is an error instead
        if self.name == "glyphs" and self.glyphs.split_by == "script" and self.train_fraction != 0.5:
            raise ValueError(f"data.train_fraction: {self.train_fraction} has no effect with data.glyphs.split_by: script "
                             "(letters test, the rest trains); leave it at 0.5")
        return self


class PreprocessConfig(Section):
    """Stage ``preprocess``: the decode mode, an optional resize cache of the prepared images
    (real datasets' full-size JPEGs decode slowly; a downscaled copy keeps training I/O-light),
    and the train split's channel statistics (see dml/data/preprocess.py)."""

    channels: Literal[1, 3] = Field(1, description="decode mode: 1 = grayscale, 3 = RGB")
    resize: int | None = Field(
        None, ge=8, le=4096,
        description="shorter side (pixels) of the cached copies, aspect ratio kept, never upscaled; null = no cache",
    )
    format: Literal["jpeg", "png", "webp", "raw"] = Field(
        "jpeg", description="how the cache stores each image: jpeg | png (lossless) | webp | raw (uncompressed uint8 pixels: "
        "no decoding when loading, about 10x the disk of jpeg; for datasets whose cache fits the page cache)")
    quality: int = Field(95, ge=1, le=100, description="jpeg / webp quality of the cache")
    workers: int = Field(2, ge=1, le=64, description="decode/resize/encode threads; the output does not depend on it")


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
