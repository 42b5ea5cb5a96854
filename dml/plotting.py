"""Figures that are pipeline outputs: one writer, :func:`save_figure`, so that every PNG is
replaced atomically and holds the same bytes for the same figure (no matplotlib version stamp),
and the retrieval-gallery grid (:func:`draw_gallery`), drawn from plain rows of images and
captions so the gallery stage and the query command share it."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dml.data.images import open_converted
from dml.io import atomic_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAME_CLASS = "#2ca02c"
OTHER_CLASS = "#d62728"
UNKNOWN_CLASS = "#9a9a9a"  # the query's class is unknown (an image from outside the dataset)
QUERY = "#1f4e9a"


def save_figure(fig: Figure, path: Path | str) -> None:
    """Write ``fig`` as a PNG at ``path`` (at the figure's dpi) and close it. The file is replaced
    only once complete, so a failing draw keeps the previous version; no ``Software`` text chunk
    (matplotlib stamps its version there), so the same figure gives the same bytes (DVC outputs)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi="figure", format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


@dataclass(frozen=True)
class Tile:
    """One framed thumbnail of the figure with the lines printed under it."""

    image: Path | Image.Image  # a file, or the pixels of a packed image (dml/catalogue.py)
    caption: tuple[str, ...]
    border: str


@dataclass(frozen=True)
class GalleryRow:
    query: Tile
    hits: list[Tile]
    extra: Tile | None = None  # drawn after a gap: the first correct neighbour beyond the top-k


def load_thumbnail(source: Path | Image.Image, size: int, background: int = 255) -> np.ndarray:
    """An RGB uint8 (size, size, 3) thumbnail of any image file or PIL image, aspect kept, centred
    on ``background``. Small images are enlarged with nearest-neighbour (crisp pixels), large ones
    shrunk with Lanczos."""
    image = source.convert("RGB") if isinstance(source, Image.Image) else open_converted(source, "RGB")
    scale = size / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    image = image.resize(new_size, resample)
    canvas = Image.new("RGB", (size, size), (background,) * 3)
    canvas.paste(image, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return np.asarray(canvas)


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def draw_gallery(rows: Sequence[GalleryRow], path: Path, title: Sequence[str], thumb_px: int = 64, dpi: int = 100) -> None:
    """Write the grid as a PNG at ``path`` (:func:`save_figure`): one pixel of the composed canvas
    is one pixel of the file, so thumbnails stay sharp; text is drawn by matplotlib on top
    (``parse_math=False``: class names may hold ``$``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("a gallery needs at least one row")
    font_pt = 8.0 if thumb_px < 96 else 9.5
    line_px = int(round(font_pt * dpi / 72 * 1.25))
    border, gap, query_gap, margin = 3, 6, 18, 10
    tile_w = thumb_px + 2 * border
    cell_w, cell_h = tile_w + gap, tile_w + 3 * line_px + gap
    query_w = max(cell_w, int(18 * _char_px(font_pt, dpi)))  # room for "sample #123456", "1st correct @ 1234"
    hits_max = max(len(row.hits) for row in rows)
    has_extra = any(row.extra is not None for row in rows)
    hits_x = margin + query_w + query_gap
    width = hits_x + cell_w * hits_max + (query_gap + cell_w if has_extra else 0) + margin
    title_pt = [font_pt + (1.5 if line == 0 else 0) for line in range(len(title))]
    wrapped = [(piece, pt, line == 0) for line, (text, pt) in enumerate(zip(title, title_pt))
               for piece in textwrap.wrap(text, max(20, int((width - 2 * margin) / _char_px(pt, dpi))))]
    title_h = len(wrapped) * int(line_px * 1.3) + margin
    height = title_h + margin + cell_h * len(rows)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    captions: list[tuple[float, float, str]] = []

    def place(tile: Tile, x: int, y: int, text_w: int) -> None:
        canvas[y : y + tile_w, x : x + tile_w] = _rgb(tile.border)
        canvas[y + border : y + border + thumb_px, x + border : x + border + thumb_px] = load_thumbnail(tile.image, thumb_px)
        for line, text in enumerate(tile.caption):
            captions.append((x + tile_w / 2, y + tile_w + 2 + line * line_px, _fit(text, text_w, font_pt, dpi)))

    for r, row in enumerate(rows):
        y = title_h + r * cell_h
        place(row.query, margin + (query_w - tile_w) // 2, y, query_w)
        for c, tile in enumerate(row.hits):
            place(tile, hits_x + c * cell_w, y, cell_w)
        if row.extra is not None:
            place(row.extra, hits_x + hits_max * cell_w + query_gap, y, cell_w + query_gap)
    # Rules: between the query column and the hits, and between rows.
    rule_x = hits_x - query_gap // 2 - 1
    canvas[title_h : height - margin, rule_x : rule_x + 1] = 200
    for r in range(1, len(rows)):
        rule_y = title_h + r * cell_h - gap // 2 - 1
        canvas[rule_y : rule_y + 1, margin : width - margin] = 230

    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for line, (text, pt, bold) in enumerate(wrapped):
        ax.text(margin, margin + line * line_px * 1.3, text, ha="left", va="top", fontsize=pt,
                fontweight="bold" if bold else "normal", parse_math=False)
    for x, y, text in captions:
        ax.text(x, y, text, ha="center", va="top", fontsize=font_pt, parse_math=False)
    save_figure(fig, path)


def _char_px(font_pt: float, dpi: int) -> float:
    """Average character width of DejaVu Sans, about 0.6 em."""
    return 0.6 * font_pt * dpi / 72


def _fit(text: str, width_px: float, font_pt: float, dpi: int) -> str:
    """``text`` cut with an ellipsis to about ``width_px``."""
    max_chars = max(3, int(width_px / _char_px(font_pt, dpi)))
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
