"""Opening image files with PIL for display (gallery thumbnails): every way a file can fail to be
an image (missing, not an image, truncated, a mode that cannot be converted) becomes one
:class:`DatasetError` line naming the file. Model input is decoded by dml/data/loading.py.
"""

from __future__ import annotations

from pathlib import Path

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
