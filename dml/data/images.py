"""Decoding image files: the one definition of how a picture becomes model input.

The preprocess stage and the query command both call :func:`load_image`, so an image queried
after training is resized, converted and laid out exactly as the test images were. Every way a
file can fail to be an image (missing, not an image, truncated, a mode that cannot be converted)
becomes one :class:`DatasetError` line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dml.errors import DatasetError

# Errors PIL raises while identifying, decoding or converting a file: SyntaxError and EOFError
# come from plugins reading broken chunks, ValueError from unsupported mode conversions.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def open_converted(path: Path | str, mode: str) -> Image.Image:
    """The image at ``path`` fully decoded and converted to PIL ``mode`` ("L", "RGB", ...)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such image file")
    if not path.is_file():
        raise DatasetError(f"{path}: not a file")
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: not an image file (PIL cannot identify its format)") from None
    except DECODE_ERRORS as err:
        raise DatasetError(f"{path}: corrupt or unconvertible image ({type(err).__name__}: {err})") from None


def load_image(path: Path | str, size: int, channels: int) -> np.ndarray:
    """Model input: uint8 (channels, size, size), bilinear-resized, grayscale for 1 channel."""
    image = open_converted(path, "L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
