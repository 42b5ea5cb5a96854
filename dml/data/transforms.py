"""The image transforms of training and evaluation (torchvision ``transforms.v2``): the paper's
random resized crop for real images, the glyphs' shift, and the eval geometry the embed stage,
monitoring and the served model share."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from dml.data.config import TransformsConfig


def train_transform(cfg: TransformsConfig) -> v2.Compose | Shift:
    """The paper's ``RandomResizedCrop(size)`` + flip for real images, or, for the small glyphs, the
    eval geometry plus a random translation by up to ``shift`` pixels (edges replicated)."""
    if cfg.train == "random_resized_crop":
        steps: list = [v2.RandomResizedCrop(cfg.size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True)]
    elif not cfg.hflip:
        return Shift(cfg)  # alone, it pads and crops a whole batch at once (ImageDataset.__getitems__)
    else:
        steps = [Shift(cfg)]
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class EvalGeometry:
    """``Resize(resize)`` (shorter side) + ``CenterCrop(size)``: 256 / 224 in the paper. An image
    already ``size`` x ``size`` with ``resize == size`` passes through untouched, which is exactly
    what the two transforms would return, without their per-call cost (most of an epoch's loading
    time for the 32 px glyphs)."""

    def __init__(self, cfg: TransformsConfig) -> None:
        self.size, self.identity_ok = cfg.size, cfg.resize == cfg.size
        self.steps = v2.Compose([v2.Resize(cfg.resize, antialias=True), v2.CenterCrop(cfg.size)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.identity_ok and image.shape[-2:] == (self.size, self.size):
            return image
        return self.steps(image)


class Shift:
    """The eval geometry, then a random translation by up to ``shift`` pixels with the edges
    replicated: exactly ``v2.RandomCrop(size, padding=shift, padding_mode="edge")`` (the same two
    draws from torch's default generator, the same pixels), but able to pad and crop a whole batch
    in one call (:meth:`ImageDataset.__getitems__`): per image, the transform machinery cost more
    than the glyph model's forward pass."""

    def __init__(self, cfg: TransformsConfig) -> None:
        self.geometry = EvalGeometry(cfg)
        self.size, self.shift = cfg.size, cfg.shift

    def offsets(self) -> tuple[int, int]:
        """(top, left) of the crop in the padded image, drawn as RandomCrop draws them."""
        if self.shift == 0:
            return 0, 0
        span = 2 * self.shift + 1
        return int(torch.randint(0, span, size=())), int(torch.randint(0, span, size=()))

    def apply(self, images: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
        """Pad a batch of eval-geometry images (N, C, size, size) and crop each at its offsets."""
        if self.shift == 0:
            return images
        padded = v2.functional.pad(images, [self.shift] * 4, padding_mode="edge")
        size = self.size
        return torch.stack([padded[i, :, top:top + size, left:left + size] for i, (top, left) in enumerate(offsets)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.apply(self.geometry(image)[None], [self.offsets()])[0]


def eval_transform(cfg: TransformsConfig) -> EvalGeometry:
    return EvalGeometry(cfg)
