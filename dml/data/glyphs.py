"""Glyphs: a deterministic zero-shot image-retrieval benchmark rendered from fonts.

A *class* is a character shape; a *sample* is one rendering of one of the class's characters in
one of the TrueType fonts bundled with matplotlib, pushed through a random affine transform and
some photometric noise. Train and test splits have disjoint classes, so the test split measures
retrieval of *unseen* classes, as in the usual deep-metric-learning benchmarks.

Pipeline
--------
1. :func:`discover_classes` renders every candidate character (Latin letters and digits, Greek,
   Cyrillic, ASCII symbols, Armenian, Georgian, arrows, mathematical operators, a few common
   symbols) in every font whose character map (fontTools ``getBestCmap``) holds it, keeps the
   characters with at least ``min_fonts`` usable (non-blank) fonts, and merges look-alikes with
   union-find (see :func:`_lookalike_edges`): Latin ``A``, Greek ``Α`` and Cyrillic ``А`` form
   the class ``"AΑА"``, and ``X``/``x`` (the lowercase is a small uppercase) share a class,
   while ``b``/``d``, ``6``/``9``, ``A``/``Λ`` or ``O``/``Q`` stay apart. The decision comes
   from the renders, not from a hand-written list.
2. :func:`generate_glyphs` shuffles the classes (with a fixed split seed, so that every data seed
   sees the same class split), puts the first ``train_fraction`` of them in train and the rest in
   test, and draws ``samples_per_class`` augmented images per class. Each sample has its own
   generator seeded by ``(seed, class, sample)``: results do not depend on iteration order, a
   ``max_classes`` subset holds exactly the samples of the full set, and the same arguments always
   give byte-identical arrays (recorded as ``GlyphSet.sha256``).

The augmentation ranges of each difficulty preset are documented in one place:
:data:`AUGMENTATIONS`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import os
import unicodedata
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "AUGMENTATIONS",
    "DIFFICULTIES",
    "SPLIT_BY",
    "SPLIT_SEED",
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

# Seed of the class shuffle that decides the train / test split. Fixed (independent of the data
# seed), so that all data seeds share one class split and one label order.
SPLIT_SEED = 20_240_601


# --------------------------------------------------------------------------------------------
# Characters and fonts
# --------------------------------------------------------------------------------------------

_RENDER_SIZE = 64  # font size (px) of the master renders

_ASCII_ALNUM = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c).isalnum())
_ASCII_LETTERS = "".join(c for c in _ASCII_ALNUM if c.isalpha())
_ASCII_SYMBOLS = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum())
_COMMON_SYMBOLS = "§¶©®°±µ¿¡€£¥¢¤¦¬«»×÷†‡•‰™№ℓ℮Ω℧ℵ♪★☆"


def _span(first: int, last: int) -> str:
    return "".join(chr(c) for c in range(first, last + 1))


@functools.lru_cache(maxsize=1)
def _candidates() -> str:
    """All candidate characters, without repeats, in a fixed order (scripts first)."""
    blocks = [
        _ASCII_ALNUM,
        _span(0x0391, 0x03A9),  # Greek capitals (U+03A2 is unassigned: no font maps it)
        _span(0x03B1, 0x03C9),  # Greek small letters
        _span(0x0400, 0x045F),  # Cyrillic
        _ASCII_SYMBOLS,
        _span(0x0531, 0x0556),  # Armenian capitals
        _span(0x0561, 0x0586),  # Armenian small letters
        _span(0x10D0, 0x10FA),  # Georgian (Mkhedruli)
        _span(0x2190, 0x21FF),  # Arrows
        _span(0x2200, 0x22FF),  # Mathematical Operators
        _COMMON_SYMBOLS,
    ]
    return "".join(dict.fromkeys("".join(blocks)))


def _font_styles(family: str) -> tuple[str, ...]:
    if family == "DejaVuSerif":
        return ("", "-Bold", "-Italic", "-BoldItalic")
    return ("", "-Bold", "-Oblique", "-BoldOblique")


# Font file stem -> characters it may be used for (None: anything in its character map). The
# Computer Modern fonts map many code points to unrelated TeX glyphs (cmti10's "$" is a pound
# sign, cmmi10's digits are old-style figures, ...), so they only serve ASCII letters / digits.
# Left out on purpose: LastResort (placeholder boxes), the *Display fonts, STIXNonUni*, STIXSiz*
# and the cmsy10 / cmex10 symbol fonts.
_FONTS: dict[str, str | None] = {
    **{family + style: None for family in ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono")
       for style in _font_styles(family)},
    **{"STIXGeneral" + style: None for style in ("", "Bol", "Italic", "BolIta")},
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
def _render(ch: str, stem: str, size: int) -> Image.Image | None:
    """``ch`` in font ``stem`` at font size ``size``: white-on-black "L" image cropped to its ink
    box, or None when the render is blank. Cached: treat the result as read-only."""
    font = _font(stem, size)
    left, top, right, bottom = font.getbbox(ch)
    pad = 2 + size // 16
    canvas = Image.new("L", (max(right - left, 1) + 2 * pad, max(bottom - top, 1) + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), ch, font=font, fill=255)
    box = canvas.getbbox()
    return None if box is None else canvas.crop(box)


@functools.lru_cache(maxsize=None)
def _thickened(ch: str, stem: str, size: int) -> Image.Image:
    """:func:`_render` with strokes grown by size / 64 pixels on each side (max filter)."""
    glyph = _render(ch, stem, size)
    assert glyph is not None
    grow = max(1, round(size / _RENDER_SIZE))
    padded = Image.new("L", (glyph.width + 2 * grow, glyph.height + 2 * grow), 0)
    padded.paste(glyph, (grow, grow))
    return padded.filter(ImageFilter.MaxFilter(2 * grow + 1))


def _usable_fonts(ch: str) -> tuple[str, ...]:
    """Fonts whose character map holds ``ch``, that may serve it, and render it non-blank."""
    return tuple(
        stem
        for stem, allowed in _FONTS.items()
        if (allowed is None or ch in allowed)
        and ord(ch) in _cmap(stem)
        and _render(ch, stem, _RENDER_SIZE) is not None
    )


# --------------------------------------------------------------------------------------------
# Look-alike detection
# --------------------------------------------------------------------------------------------
#
# Two renders of a font are compared after normalisation: each is scaled into a fixed square,
# both at one common aspect ratio (the mean of theirs, quantised), i.e. their aspect ratio is
# preserved up to a small common correction, and pairs whose aspect ratios differ by more than
# _ASPECT_GATE never match (e.g. "-" vs "|"). Each normalised render is
# binarised; the distance of a pair is the larger of the two fractions "ink of one glyph farther
# than _TOLERANCE px from any ink of the other". That tolerates stroke-weight and serif-size
# differences (X vs x) but not a missing or extra stroke (A vs Λ, O vs Q, E vs F). Two characters
# are look-alikes when the distance is <= _MAX_OUTLIER_FRACTION in at least _MIN_AGREEMENT of
# the (>= _MIN_SHARED_FONTS) fonts they share.
#
# The thresholds were picked from the per-font distances: A/Α/А are 0.00 in every font, X/x
# 0.00 in the DejaVu fonts, S/s, O/o, V/v, W/w, Z/z, C/c <= 0.02 in half or more of the fonts,
# while A/Λ is >= 0.03 in every font (mostly >= 0.05), n/u >= 0.04 (mostly ~0.1), 6/9 >= 0.05,
# O/Q >= 0.07, b/d and p/q >= 0.14. So the pairs A/Α/А, X/x, O/o, S/s, C/c, V/v, W/w, Z/z are
# look-alikes and A/Λ, O/Q, b/d, p/q, 6/9, n/u, M/W, U/u, E/e, =/≈, ≅/≡, ⊗/⊚ are not. Classes
# are the connected components of the look-alike graph (union-find), so no two classes share a
# look-alike pair, and a class may be a chain of look-alikes: "nΠПпՈո∏" (n ~ italic п ~ upright
# п ~ П ~ Π), or "UuՍս" (U ~ Armenian Ս ~ ս ~ u, although U/u themselves do not match).

_NORM_SIZE = 48
_TOLERANCE = 2.5
_ASPECT_STEP = 0.1  # quantisation of log(width / height) for the common normalisation
_ASPECT_GATE = 0.3  # max |log aspect difference| of a matching pair
_MAX_OUTLIER_FRACTION = 0.025
_MIN_AGREEMENT = 0.5
_MIN_SHARED_FONTS = 4


def _binary_at_aspect(glyph: Image.Image, log_aspect: float) -> np.ndarray:
    """Glyph stretched to width/height = exp(log_aspect), longer side _NORM_SIZE, centred in a
    _NORM_SIZE square; boolean ink mask."""
    s = _NORM_SIZE
    if log_aspect >= 0:
        w, h = s, max(1, round(s * math.exp(-log_aspect)))
    else:
        w, h = max(1, round(s * math.exp(log_aspect))), s
    out = Image.new("L", (s, s), 0)
    out.paste(glyph.resize((w, h), Image.Resampling.BILINEAR), ((s - w) // 2, (s - h) // 2))
    return np.asarray(out) >= 128


_DISK = [
    (dy, dx)
    for dy in range(-int(_TOLERANCE), int(_TOLERANCE) + 1)
    for dx in range(-int(_TOLERANCE), int(_TOLERANCE) + 1)
    if dy * dy + dx * dx <= _TOLERANCE * _TOLERANCE
]
_CELL = 3  # cell side of the coarse pre-check; must be > _TOLERANCE (see _font_matches)


def _dilate(masks: np.ndarray, offsets: list[tuple[int, int]]) -> np.ndarray:
    """Binary dilation of a stack of masks (n, h, w) by the given (dy, dx) offsets."""
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    h, w = masks.shape[-2:]
    padded = np.pad(masks, ((0, 0), (r, r), (r, r)))
    out = np.zeros_like(masks)
    for dy, dx in offsets:
        out |= padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def _font_matches(glyphs: list[Image.Image]) -> np.ndarray:
    """Boolean matrix: which pairs of glyphs (rendered in one font) look alike (see above).

    Exact distances are only computed for the few pairs that pass a cheap lower bound: ink of
    glyph i in a cell (_CELL x _CELL pixels) whose 3 x 3 cell neighbourhood holds no ink of j is
    farther than _TOLERANCE from all ink of j, so it counts towards the outliers of (i, j).
    """
    n = len(glyphs)
    aspect = np.array([math.log(g.width / g.height) for g in glyphs])
    pair_bin = np.rint((aspect[:, None] + aspect[None, :]) / (2 * _ASPECT_STEP)).astype(int)
    comparable = np.abs(aspect[:, None] - aspect[None, :]) <= _ASPECT_GATE
    matches = np.zeros((n, n), dtype=bool)
    reach = _ASPECT_GATE / 2 + _ASPECT_STEP / 2 + 1e-9
    cells = _NORM_SIZE // _CELL
    neighbours = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for b in range(int(pair_bin.min()), int(pair_bin.max()) + 1):
        centre = b * _ASPECT_STEP
        members = np.flatnonzero(np.abs(aspect - centre) <= reach)
        wanted = (pair_bin[np.ix_(members, members)] == b) & comparable[np.ix_(members, members)]
        wanted = np.triu(wanted, k=1)
        if not wanted.any():
            continue
        k = len(members)
        ink = np.stack([_binary_at_aspect(glyphs[i], centre) for i in members])
        ink_count = np.maximum(ink.reshape(k, -1).sum(axis=1), 1).astype(np.float64)
        # Coarse lower bound on the outlier fractions (exact small integers in float32).
        per_cell = ink.reshape(k, cells, _CELL, cells, _CELL).sum(axis=(2, 4)).astype(np.float32)
        empty_around = ~_dilate(per_cell > 0, neighbours)
        bound = per_cell.reshape(k, -1) @ empty_around.reshape(k, -1).astype(np.float32).T
        bound = bound / ink_count[:, None]
        ii, jj = np.nonzero(wanted & (np.maximum(bound, bound.T) <= _MAX_OUTLIER_FRACTION))
        if len(ii) == 0:
            continue
        # Exact outlier fractions of the remaining pairs.
        ink_flat = ink.reshape(k, -1)
        far_flat = ~_dilate(ink, _DISK).reshape(k, -1)
        out_ij = (ink_flat[ii] & far_flat[jj]).sum(axis=1) / ink_count[ii]
        out_ji = (ink_flat[jj] & far_flat[ii]).sum(axis=1) / ink_count[jj]
        ok = np.maximum(out_ij, out_ji) <= _MAX_OUTLIER_FRACTION
        matches[members[ii[ok]], members[jj[ok]]] = True
    return matches | matches.T


def _lookalike_edges(chars: list[str], fonts: dict[str, tuple[str, ...]]) -> list[tuple[int, int]]:
    """Look-alike pairs (i < j) of ``chars``."""
    n = len(chars)
    shared = np.zeros((n, n), dtype=np.int64)
    agree = np.zeros((n, n), dtype=np.int64)
    for stem in _FONTS:
        members = np.array([i for i, ch in enumerate(chars) if stem in fonts[ch]], dtype=np.int64)
        if len(members) < 2:
            continue
        sub = np.ix_(members, members)
        shared[sub] += 1
        agree[sub] += _font_matches([_render(chars[i], stem, _RENDER_SIZE) for i in members])
    score = agree / np.maximum(shared, 1)
    ok = (score >= _MIN_AGREEMENT) & (shared >= _MIN_SHARED_FONTS)
    ii, jj = np.nonzero(np.triu(ok, k=1))
    return list(zip(ii.tolist(), jj.tolist()))


def _merge(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Union-find: the connected components of the look-alike graph, as sorted index lists."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in edges:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values())


@dataclass(frozen=True)
class GlyphClass:
    name: str  # merged characters, e.g. "AΑА"
    variants: tuple[tuple[str, str], ...]  # (character, font file stem) pairs usable for it

    @property
    def fonts(self) -> frozenset[str]:
        """Distinct fonts among the variants."""
        return frozenset(stem for _, stem in self.variants)


@functools.lru_cache(maxsize=None)
def _discover(min_fonts: int) -> tuple[GlyphClass, ...]:
    fonts = {ch: _usable_fonts(ch) for ch in _candidates()}
    chars = [ch for ch in _candidates() if len(fonts[ch]) >= min_fonts]
    groups = _merge(len(chars), _lookalike_edges(chars, fonts))
    classes = [
        GlyphClass(
            name="".join(chars[i] for i in group),
            variants=tuple((chars[i], stem) for i in group for stem in fonts[chars[i]]),
        )
        for group in groups
    ]
    return tuple(sorted(classes, key=lambda c: c.name))


def discover_classes(min_fonts: int = 8) -> list[GlyphClass]:
    """Deterministic, sorted list of merged classes (before the seeded shuffle).

    Characters with fewer than ``min_fonts`` usable fonts are dropped before merging, so every
    class has at least ``min_fonts`` distinct fonts among its variants. Cached per process.
    """
    _check_int("min_fonts", min_fonts, 1)
    return list(_discover(min_fonts))


# --------------------------------------------------------------------------------------------
# Sample generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GlyphSet:
    images: np.ndarray  # uint8, shape (N, image_size, image_size)
    labels: np.ndarray  # int64, shape (N,), index into class_names
    class_names: list[str]
    is_train: np.ndarray  # bool, shape (N,), True for samples of train classes
    is_source: np.ndarray  # bool, shape (N,), True for the pretraining source classes (neither train nor test)
    sha256: str  # hash of images.tobytes() + labels.tobytes()

    @property
    def splits(self) -> list[str]:
        """Each sample's split: "source", "train" or "test"."""
        return ["source" if s else "train" if t else "test" for s, t in zip(self.is_source.tolist(), self.is_train.tolist())]


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


_SUPERSAMPLE = 2  # the affine is applied at 2x the output size, then box-averaged down


def _sample(glyph_class: GlyphClass, rng: np.random.Generator, size: int, aug: Augmentation,
            render_size: int) -> np.ndarray:
    """One augmented ``size`` x ``size`` uint8 image of ``glyph_class``."""
    ch, stem = glyph_class.variants[int(rng.integers(len(glyph_class.variants)))]
    u = rng.random(13)
    if u[0] < aug.thicken_p:
        glyph = _thickened(ch, stem, render_size)
    else:
        glyph = _render(ch, stem, render_size)
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


# How the classes are divided into train and test (``data.glyphs.split_by``):
#   random: the first train_fraction of the shuffled classes train, the rest test;
#   script: a real distribution shift: every class without a letter (arrows, mathematical
#           operators, punctuation, symbols, digits) trains, every class with a letter (Latin,
#           Greek, Cyrillic, Armenian, Georgian) tests.
SPLIT_BY: tuple[str, ...] = ("random", "script")


def is_letter_class(name: str) -> bool:
    """A class holds a letter when any of its merged characters is a Unicode letter (category L*):
    "0OoΟ..." and "2շ" are letter classes, "∏" alone or "→" are not."""
    return any(unicodedata.category(ch).startswith("L") for ch in name)


def generate_glyphs(seed: int = 0, samples_per_class: int = 40, image_size: int = 32,
                    difficulty: str = "hard", min_fonts: int = 8, train_fraction: float = 0.5,
                    max_classes: int | None = None, split_by: str = "random",
                    source_fraction: float = 0.0) -> GlyphSet:
    """Samples ordered by (shuffled class order, sample index); max_classes keeps the first
    max_classes classes after the shuffle (for tiny test configs).

    ``class_names`` follow the shuffled order (label ``k`` is ``class_names[k]``). The first
    ``round(source_fraction * n_classes)`` classes are the pretraining *source* set (held out of
    both train and test, drawn from every script); of the rest, ``split_by`` decides (see
    :data:`SPLIT_BY`): with ``random`` the first ``round(train_fraction * n)`` (at least one, at
    most all but one) are train. ``source_fraction=0`` and ``random`` give the original split.
    """
    _check_int("seed", seed, 0)
    _check_int("samples_per_class", samples_per_class, 2)
    _check_int("image_size", image_size, 8)
    _check_int("min_fonts", min_fonts, 1)
    if difficulty not in AUGMENTATIONS:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, numbers.Real) or not (
        0.0 < train_fraction < 1.0
    ):
        raise ValueError(f"train_fraction must be a number strictly between 0 and 1, got {train_fraction!r}")
    if max_classes is not None:
        _check_int("max_classes", max_classes, 2)
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    if isinstance(source_fraction, bool) or not isinstance(source_fraction, numbers.Real) or not (
        0.0 <= source_fraction < 1.0
    ):
        raise ValueError(f"source_fraction must be a number in [0, 1), got {source_fraction!r}")

    classes = _discover(min_fonts)
    if len(classes) < 2:
        raise ValueError(f"min_fonts={min_fonts} leaves {len(classes)} classes; at least 2 are needed")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(classes))
    if max_classes is not None:
        order = order[:max_classes]
    n_classes = len(order)
    n_source = round(source_fraction * n_classes)
    source, rest = order[:n_source], order[n_source:]
    if split_by == "random":
        n_train = min(max(round(train_fraction * len(rest)), 1), len(rest) - 1)
        train, test = rest[:n_train], rest[n_train:]
    else:
        letters = np.array([is_letter_class(classes[i].name) for i in rest.tolist()], dtype=bool)
        train, test = rest[~letters], rest[letters]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"split_by={split_by!r} with {n_classes} classes ({n_source} source) leaves "
                         f"{len(train)} train and {len(test)} test classes; both need at least one")
    # labels: source classes first, then train, then test (each in shuffled order)
    order = np.concatenate([source, train, test])

    aug = AUGMENTATIONS[difficulty]
    render_size = max(_RENDER_SIZE, 2 * image_size)
    images = np.empty((n_classes * samples_per_class, image_size, image_size), dtype=np.uint8)
    for position, class_index in enumerate(order.tolist()):
        for k in range(samples_per_class):
            rng = np.random.default_rng([seed, class_index, k])
            images[position * samples_per_class + k] = _sample(
                classes[class_index], rng, image_size, aug, render_size
            )
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), samples_per_class)
    is_source = labels < n_source
    is_train = ~is_source & (labels < n_source + len(train))
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return GlyphSet(
        images=images,
        labels=labels,
        class_names=[classes[i].name for i in order.tolist()],
        is_train=is_train,
        is_source=is_source,
        sha256=digest,
    )
