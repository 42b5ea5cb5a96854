"""Glyphs benchmark, part 3: the difficulty presets and the one augmented image of a class that
each sample is (overview: dml/data/glyphs.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from dml.data.glyph_classes import GlyphClass
from dml.data.glyph_fonts import render, thickened

# --------------------------------------------------------------------------------------------
# Augmentation presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random per-sample augmentation (each drawn uniformly in its range).

    Geometry acts on the glyph cropped to its ink box: rotation, horizontal shear and an aspect
    change, after which the glyph is scaled so that the longer side of its (transformed) box
    covers ``fill`` of the frame and moved by up to ``shift`` of the free margin on each axis, so
    it is never clipped. There are no flips: a mirrored character is another character.
    """

    rotation_deg: float  # rotation angle in [-r, r] degrees
    shear: float  # horizontal shear factor in [-s, s]
    log_aspect: float  # width / height multiplied by exp(U[-a, a])
    fill: tuple[float, float]  # longer side of the transformed glyph box / frame side
    shift: float  # fraction of the free margin (per axis) the glyph may move off-centre
    thicken_p: float  # probability of stroke thickening (max filter, ~2% of the glyph height)
    blur_p: float  # probability of a Gaussian blur of the ink
    blur_sigma: tuple[float, float]  # blur standard deviation, output pixels
    min_contrast: float  # |ink - background| grey levels: U[min_contrast, 255]
    dark_ink_p: float  # probability that the ink is darker than the background
    noise_std: tuple[float, float]  # additive Gaussian noise std, grey levels


AUGMENTATIONS: dict[str, Augmentation] = {
    "easy": Augmentation(
        rotation_deg=8.0,
        shear=0.1,
        log_aspect=0.1,
        fill=(0.75, 0.9),
        shift=0.2,
        thicken_p=0.15,
        blur_p=0.2,
        blur_sigma=(0.3, 0.6),
        min_contrast=120.0,
        dark_ink_p=0.5,
        noise_std=(0.0, 8.0),
    ),
    "hard": Augmentation(
        rotation_deg=18.0,
        shear=0.25,
        log_aspect=0.25,
        fill=(0.65, 0.95),
        shift=0.3,
        thicken_p=0.3,
        blur_p=0.5,
        blur_sigma=(0.4, 1.0),
        min_contrast=60.0,
        dark_ink_p=0.5,
        noise_std=(4.0, 24.0),
    ),
}

DIFFICULTIES: tuple[str, ...] = tuple(AUGMENTATIONS)


_SUPERSAMPLE = 2  # the affine is applied at 2x the output size, then box-averaged down


def sample_image(glyph_class: GlyphClass, rng: np.random.Generator, size: int, aug: Augmentation,
                 render_size: int) -> np.ndarray:
    """One augmented ``size`` x ``size`` uint8 image of ``glyph_class``."""
    ch, stem = glyph_class.variants[int(rng.integers(len(glyph_class.variants)))]
    u = rng.random(13)
    if u[0] < aug.thicken_p:
        glyph = thickened(ch, stem, render_size)
    else:
        glyph = render(ch, stem, render_size)
        assert glyph is not None

    # Geometry: linear map (output <- glyph) = rotation @ shear @ aspect, then scale and shift.
    theta = math.radians(aug.rotation_deg * (2 * u[1] - 1))
    shear = aug.shear * (2 * u[2] - 1)
    stretch = math.exp(0.5 * aug.log_aspect * (2 * u[3] - 1))
    cos, sin = math.cos(theta), math.sin(theta)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    linear = linear @ np.diag([stretch, 1.0 / stretch])
    w, h = glyph.size
    corners = linear @ np.array([[-w, w, w, -w], [-h, -h, h, h]], dtype=np.float64) / 2
    extent = corners.max(axis=1) - corners.min(axis=1)
    frame = size * _SUPERSAMPLE
    fill = aug.fill[0] + (aug.fill[1] - aug.fill[0]) * u[4]
    scale = fill * frame / extent.max()
    margin = (frame - scale * extent) / 2
    centre = frame / 2 + aug.shift * margin * (2 * u[5:7] - 1)
    (a, b), (c, d) = (scale * linear).tolist()
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det  # inverse: output -> glyph
    cx, cy = centre.tolist()
    coeffs = (ia, ib, w / 2 - ia * cx - ib * cy, ic, id_, h / 2 - ic * cx - id_ * cy)
    ink = glyph.transform((frame, frame), Image.Transform.AFFINE, coeffs,
                          resample=Image.Resampling.BILINEAR, fillcolor=0)
    ink = ink.reduce(_SUPERSAMPLE)
    if u[7] < aug.blur_p:
        sigma = aug.blur_sigma[0] + (aug.blur_sigma[1] - aug.blur_sigma[0]) * u[8]
        ink = ink.filter(ImageFilter.GaussianBlur(float(sigma)))

    # Photometry: background / ink grey levels with a minimum contrast, additive noise.
    contrast = aug.min_contrast + (255.0 - aug.min_contrast) * u[9]
    dark = (255.0 - contrast) * u[10]
    light = dark + contrast
    background, ink_level = (light, dark) if u[11] < aug.dark_ink_p else (dark, light)
    noise_std = aug.noise_std[0] + (aug.noise_std[1] - aug.noise_std[0]) * u[12]
    alpha = np.asarray(ink, dtype=np.float64) / 255.0
    image = background + (ink_level - background) * alpha
    image += noise_std * rng.standard_normal((size, size))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
