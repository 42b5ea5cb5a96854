"""Glyphs: a deterministic zero-shot image-retrieval benchmark rendered from fonts.

A *class* is a character shape; a *sample* is one rendering of one of the class's characters in
one of the fonts bundled with matplotlib, pushed through a random affine transform and some
photometric noise. Train and test splits have disjoint classes, so the test split measures
retrieval of *unseen* classes (zero-shot), as in the usual deep-metric-learning benchmarks.

Pipeline
--------
1. :func:`discover_classes` renders every candidate character (Latin, Greek, Cyrillic, ASCII
   symbols, Armenian, Georgian, arrows, mathematical operators, a few common symbols) in every
   font whose character map (fontTools ``getBestCmap``) holds it, keeps the characters with at
   least ``min_fonts`` usable (non-blank) fonts, and merges look-alikes with union-find: two
   characters share a class when their normalised renders (cropped to the ink box, scaled
   preserving aspect ratio into a fixed square) are near-identical in most of the fonts they
   share. So Latin ``A``, Greek ``Α`` and Cyrillic ``А`` form one class ``"AΑА"``, and so do
   ``X``/``x`` (the lowercase is a small uppercase), while ``b``/``d`` or ``6``/``9`` stay apart.
2. :func:`generate_glyphs` shuffles the classes with the seed, puts the first
   ``train_fraction`` of them in train and the rest in test, and draws ``samples_per_class``
   augmented images per class. Every sample uses its own generator seeded by
   ``(seed, class, sample)``, so the result does not depend on iteration order, and the same
   arguments always give byte-identical arrays (recorded as ``GlyphSet.sha256``).

The augmentation ranges of each difficulty preset live in :data:`AUGMENTATIONS`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "AUGMENTATIONS",
    "DIFFICULTIES",
    "Augmentation",
    "GlyphClass",
    "GlyphSet",
    "discover_classes",
    "font_dir",
    "generate_glyphs",
]


# --------------------------------------------------------------------------------------------
# Augmentation presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random per-sample augmentation (all drawn uniformly unless noted).

    Geometry is applied to the glyph cropped to its ink box: rotation, shear, aspect change,
    then the result is scaled so that its bounding box's longer side fills ``fill`` of the
    frame, and shifted by up to ``shift`` of the free margin on each axis (so the glyph is never
    clipped). There are no flips: a mirrored character is a different character.
    """

    rotation_deg: float  # rotation in [-r, r] degrees
    shear: float  # horizontal shear factor in [-s, s]
    log_aspect: float  # width/height multiplied by exp(U[-a, a])
    fill: tuple[float, float]  # longer side of the transformed glyph box / frame side
    shift: float  # fraction of the free margin the glyph may move, per axis
    thicken_p: float  # probability of stroke thickening (3x3 max filter at render scale)
    blur_p: float  # probability of a Gaussian blur of the output
    blur_sigma: tuple[float, float]  # blur radius range, in output pixels
    min_contrast: float  # minimum |ink - background| grey-level difference (0..255)
    noise_std: tuple[float, float]  # additive Gaussian noise std range, grey levels (0..255)


AUGMENTATIONS: dict[str, Augmentation] = {
    "easy": Augmentation(
        rotation_deg=8.0,
        shear=0.1,
        log_aspect=0.1,
        fill=(0.7, 0.9),
        shift=0.5,
        thicken_p=0.15,
        blur_p=0.2,
        blur_sigma=(0.3, 0.6),
        min_contrast=120.0,
        noise_std=(0.0, 8.0),
    ),
    "hard": Augmentation(
        rotation_deg=18.0,
        shear=0.25,
        log_aspect=0.25,
        fill=(0.55, 0.95),
        shift=1.0,
        thicken_p=0.3,
        blur_p=0.5,
        blur_sigma=(0.4, 1.0),
        min_contrast=60.0,
        noise_std=(4.0, 24.0),
    ),
}

DIFFICULTIES: tuple[str, ...] = tuple(AUGMENTATIONS)


# --------------------------------------------------------------------------------------------
# Characters and fonts
# --------------------------------------------------------------------------------------------

_RENDER_SIZE = 64  # font size (px) of the master renders
_NORM_SIZE = 32  # side of the normalised renders compared when merging look-alikes

_ASCII_ALNUM = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c).isalnum())
_ASCII_LETTERS = "".join(c for c in _ASCII_ALNUM if c.isalpha())
_ASCII_SYMBOLS = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum())
_COMMON_SYMBOLS = "§¶©®°±µ¿¡€£¥¢¤¦¬«»×÷†‡•‰‹›™℮ℓ№Ω℧ℵ♠♣♥♦♪♫☺☼★☆"


def _span(first: int, last: int) -> str:
    return "".join(chr(c) for c in range(first, last + 1))


def _candidates() -> str:
    blocks = [
        _ASCII_ALNUM,
        _span(0x0391, 0x03A9),  # Greek capitals (U+03A2 unassigned: no font maps it)
        _span(0x03B1, 0x03C9),  # Greek small
        _span(0x0400, 0x045F),  # Cyrillic
        _ASCII_SYMBOLS,
        _span(0x0531, 0x0556),  # Armenian capitals
        _span(0x0561, 0x0586),  # Armenian small
        _span(0x10D0, 0x10FA),  # Georgian Mkhedruli
        _span(0x2190, 0x21FF),  # Arrows
        _span(0x2200, 0x22FF),  # Mathematical Operators
        _COMMON_SYMBOLS,
    ]
    seen: dict[str, None] = {}
    for block in blocks:
        for ch in block:
            seen.setdefault(ch, None)
    return "".join(seen)


# Font file stem -> characters it may be used for (None: any character in its cmap). The
# Computer Modern fonts map many non-alphanumeric code points to unrelated TeX glyphs (e.g.
# cmti10's "$" is a pound sign, cmmi10's digits are old-style figures), so they are limited.
_FONTS: dict[str, str | None] = {
    **{
        f"DejaVu{family}{style}": None
        for family in ("Sans", "Serif", "SansMono")
        for style in (
            ("", "-Bold", "-Oblique", "-BoldOblique")
            if family != "Serif"
            else ("", "-Bold", "-Italic", "-BoldItalic")
        )
    },
    **{f"STIXGeneral{style}": None for style in ("", "Bol", "Italic", "BolIta")},
    **{stem: _ASCII_ALNUM for stem in ("cmr10", "cmss10", "cmtt10", "cmb10", "cmti10")},
    "cmmi10": _ASCII_LETTERS,
}


def font_dir() -> str:
    """Directory of the TrueType fonts bundled with matplotlib."""
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


@functools.lru_cache(maxsize=None)
def _font(stem: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(os.path.join(font_dir(), stem + ".ttf"), size)


@functools.lru_cache(maxsize=None)
def _cmap(stem: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(os.path.join(font_dir(), stem + ".ttf"), lazy=True) as font:
        return frozenset(font.getBestCmap())


@functools.lru_cache(maxsize=None)
def _render(ch: str, stem: str) -> Image.Image | None:
    """``ch`` in font ``stem`` at the master size: white-on-black "L" image cropped to its ink
    box, or None when the render is blank."""
    font = _font(stem, _RENDER_SIZE)
    left, top, right, bottom = font.getbbox(ch)
    pad = 4
    canvas = Image.new("L", (max(right - left, 1) + 2 * pad, max(bottom - top, 1) + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), ch, font=font, fill=255)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    if np.asarray(glyph).max() < 128:  # a faint smudge (hairline artefact), not a glyph
        return None
    return glyph


def _normalised(glyph: Image.Image, size: int = _NORM_SIZE) -> np.ndarray:
    """Glyph scaled preserving aspect ratio so that its longer side is ``size``, centred in a
    ``size`` x ``size`` square; float32 in [0, 1]."""
    w, h = glyph.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.new("L", (size, size), 0)
    out.paste(glyph.resize((nw, nh), Image.Resampling.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    out = out.filter(ImageFilter.GaussianBlur(1.0))
    return np.asarray(out, dtype=np.float32) / 255.0
