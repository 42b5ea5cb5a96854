"""Glyphs benchmark, part 2: characters that look alike in most fonts are merged into one class
(see the comment below), so that a class is a shape, not a code point (overview:
dml/data/glyphs.py)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dml.data.glyph_fonts import FONTS, RENDER_SIZE, candidates, render, usable_fonts

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
    for stem in FONTS:
        members = np.array([i for i, ch in enumerate(chars) if stem in fonts[ch]], dtype=np.int64)
        if len(members) < 2:
            continue
        sub = np.ix_(members, members)
        shared[sub] += 1
        agree[sub] += _font_matches([render(chars[i], stem, RENDER_SIZE) for i in members])
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
def discover_cached(min_fonts: int) -> tuple[GlyphClass, ...]:
    """:func:`discover_classes` unchecked, as the cached tuple itself (generation only reads it)."""
    fonts = {ch: usable_fonts(ch) for ch in candidates()}
    chars = [ch for ch in candidates() if len(fonts[ch]) >= min_fonts]
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
    check_int("min_fonts", min_fonts, 1)
    return list(discover_cached(min_fonts))


def check_int(name: str, value: object, minimum: int) -> None:
    """Argument check of discovery and generation: an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
