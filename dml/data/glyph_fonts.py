"""Glyphs benchmark, part 1: the candidate characters, the fonts bundled with matplotlib that may
draw them, and the cached master renders every later step starts from (overview:
dml/data/glyphs.py)."""

from __future__ import annotations

import functools
import os

from PIL import Image, ImageDraw, ImageFilter, ImageFont

RENDER_SIZE = 64  # font size (px) of the master renders

_ASCII_ALNUM = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c).isalnum())
_ASCII_LETTERS = "".join(c for c in _ASCII_ALNUM if c.isalpha())
_ASCII_SYMBOLS = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum())
_COMMON_SYMBOLS = "§¶©®°±µ¿¡€£¥¢¤¦¬«»×÷†‡•‰™№ℓ℮Ω℧ℵ♪★☆"


def _span(first: int, last: int) -> str:
    return "".join(chr(c) for c in range(first, last + 1))


@functools.lru_cache(maxsize=1)
def candidates() -> str:
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
FONTS: dict[str, str | None] = {
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
def render(ch: str, stem: str, size: int) -> Image.Image | None:
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
def thickened(ch: str, stem: str, size: int) -> Image.Image:
    """:func:`render` with strokes grown by size / 64 pixels on each side (max filter)."""
    glyph = render(ch, stem, size)
    assert glyph is not None
    grow = max(1, round(size / RENDER_SIZE))
    padded = Image.new("L", (glyph.width + 2 * grow, glyph.height + 2 * grow), 0)
    padded.paste(glyph, (grow, grow))
    return padded.filter(ImageFilter.MaxFilter(2 * grow + 1))


def usable_fonts(ch: str) -> tuple[str, ...]:
    """Fonts whose character map holds ``ch``, that may serve it, and render it non-blank."""
    return tuple(
        stem
        for stem, allowed in FONTS.items()
        if (allowed is None or ch in allowed)
        and ord(ch) in _cmap(stem)
        and render(ch, stem, RENDER_SIZE) is not None
    )
