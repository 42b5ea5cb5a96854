"""Image files <-> uint8 tensors (C, H, W): decoding, shorter-side resizing, encoding.

torchvision.io decodes JPEG (libjpeg-turbo), PNG and WebP straight into tensors, without a PIL
image in between; PIL decodes every other format (BMP, TIFF, GIF, ...) and anything torchvision
rejects, so a file only fails when both decoders fail: one :class:`DatasetError` line naming it.
The decode mode is the dataset's: 1 channel = gray, 3 = RGB, so grayscale, palette, CMYK, alpha
and 16-bit images all come out as uint8 with the same channel count (alpha is dropped, as by
PIL's ``convert``). EXIF orientation is not applied (as PIL's ``Image.open`` and the
usual DML loaders do not).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dml.errors import DatasetError

Format = Literal["jpeg", "png", "webp", "raw"]
LOSSLESS: frozenset[str] = frozenset({"png", "raw"})
_PIL_MODES = {1: "L", 3: "RGB"}
# What PIL raises on a file it cannot identify, decode or convert: SyntaxError / EOFError come
# from plugins reading broken chunks, ValueError from unsupported mode conversions.
_PIL_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _torchvision_kind(data: torch.Tensor) -> str | None:
    """"jpeg" / "png" / "webp" from the file's magic bytes; None for formats left to PIL."""
    head = bytes(data[:12].tolist())
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return "webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """(1, H, W) luma of a uint8 gray, gray+alpha, RGB or RGBA image, with PIL's ``convert("L")``
    integer formula (ITU-R 601-2), so every format is grayed the same way (libpng's own
    conversion uses other weights; torchvision's WebP decoder has none)."""
    if image.shape[0] <= 2:
        return image[:1]
    r, g, b = image[:3].to(torch.int32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Stored uint8 pixels in the dataset's decode mode: gray repeated to RGB (as PIL's
    ``convert("RGB")``), RGB grayed by :func:`to_gray`."""
    if image.shape[0] == channels:
        return image
    return to_gray(image) if channels == 1 else image[:1].expand(3, -1, -1).contiguous()


def decode(data: torch.Tensor, channels: int, source: Path | str) -> torch.Tensor:
    """The encoded image ``data`` (1-D uint8 tensor) as a uint8 (channels, H, W) tensor;
    ``source`` names the file in errors."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as F

    kind = _torchvision_kind(data)
    if kind is not None:
        # libjpeg's gray output is the JPEG's own luma channel (the same 601 weights, no colour
        # round trip); other formats are decoded as stored and grayed by to_gray.
        mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY if kind == "jpeg" else ImageReadMode.UNCHANGED
        try:
            image = decode_image(data, mode=mode)
        except RuntimeError:
            image = None  # PIL gets a second opinion (and words the error)
        if image is not None and image.ndim == 3:
            if image.dtype != torch.uint8:  # 16-bit PNG
                image = F.to_dtype(image, torch.uint8, scale=True)
            image = to_gray(image) if channels == 1 else image
            if image.shape[0] == channels:
                return image
    return _decode_pil(data, channels, source)


def _decode_pil(data: torch.Tensor, channels: int, source: Path | str) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as opened:
            array = np.asarray(opened.convert(_PIL_MODES[channels]), dtype=np.uint8)
    except UnidentifiedImageError:
        raise DatasetError(f"{source}: not an image file (neither torchvision nor PIL can decode it)") from None
    except _PIL_ERRORS as err:
        reason = (str(err).strip().splitlines() or [""])[0][:160]
        raise DatasetError(f"{source}: corrupt or unconvertible image ({type(err).__name__}: {reason})") from None
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def read_bytes(path: Path | str) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor (what :func:`decode` takes)."""
    from torchvision.io import read_file

    try:
        return read_file(str(path))
    except RuntimeError:
        raise DatasetError(f"{path}: cannot read the image file (missing or unreadable)") from None


def decode_file(path: Path | str, channels: int) -> torch.Tensor:
    """The image at ``path`` as a uint8 (channels, H, W) tensor."""
    return decode(read_bytes(path), channels, path)


def resize_shorter(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Downscale so the shorter side is ``size`` pixels, keeping the aspect ratio (torchvision's
    rounding: the longer side is truncated, 400 x 300 -> 341 x 256), antialiased bilinear.
    Smaller images are left alone: upscaling would only add interpolation blur to the cache,
    and the training crop resizes anyway."""
    from torchvision.transforms.v2 import functional as F

    if size is None or min(image.shape[-2:]) <= size:
        return image
    return F.resize(image, [size], antialias=True)


def encode(image: torch.Tensor, fmt: Format, quality: int) -> torch.Tensor:
    """``image`` (uint8, 1 or 3 channels) encoded as ``fmt`` (``raw``: its pixels, C x H x W);
    quality is ignored for PNG and raw."""
    from torchvision.io import encode_jpeg, encode_png

    if fmt == "raw":
        return image.contiguous().reshape(-1).clone()
    if fmt == "jpeg":
        return encode_jpeg(image, quality=quality)
    if fmt == "png":
        return encode_png(image)
    buffer = io.BytesIO()  # torchvision has no WebP encoder
    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
    Image.fromarray(array).save(buffer, format="WEBP", quality=quality)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
