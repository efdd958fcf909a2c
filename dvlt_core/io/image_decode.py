"""Decoding image files and compressed image bytes with memory bounded by ``max_pixels``.

Every surface that decodes images (``dvlt-reconstruct``, the ROS node's compressed input,
offline bag processing, bag-to-dataset conversion) goes through :func:`decode_image`:

1. the header is read first (PIL opens lazily): a zero size, or a size above PIL's
   decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89 MP), is refused before any
   pixel is decoded;
2. a JPEG larger than ``max_pixels`` is reduced while it is decoded (``Image.draft``: the
   DCT is decoded at 1/2, 1/4 or 1/8 scale, the smallest scale still at least the target
   size), so its full raster never exists;
3. what is left to decode may hold at most ``DECODE_HEADROOM * max_pixels`` pixels
   (3840x2160 with the default ``max_pixels``); anything larger is refused (other formats
   cannot be reduced while decoding);
4. the raster is converted to RGB and downscaled (antialiased bilinear, aspect kept,
   :func:`fit_max_pixels`) to at most ``max_pixels``.

Peak memory is therefore a small multiple of ``max_pixels`` whatever the input claims to
be. Refusals and undecodable data raise :class:`ImageDecodeError` with a one-line reason.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default pixel budget of an input image (Full HD); larger images are downscaled to it.
DEFAULT_MAX_PIXELS = 1920 * 1080
#: A raster may be decoded with up to this many times ``max_pixels`` pixels before it is
#: downscaled; larger ones are refused.
DECODE_HEADROOM = 4


class ImageDecodeError(ValueError):
    """An image that is not decoded (refused or corrupt); the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    """``rgb``: writable uint8 (H, W, 3), at most ``max_pixels`` pixels;
    ``source_size``: (width, height) the image has as stored (before any reduction; after
    its EXIF orientation, when that is applied)."""

    rgb: np.ndarray
    source_size: tuple[int, int]


def fit_max_pixels(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) of an image scaled, aspect kept, to at most ``max_pixels`` pixels
    (unchanged when it already fits or ``max_pixels`` is None)."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    factor = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * factor)), max(1, math.floor(height * factor))


def check_decode_size(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise :class:`ImageDecodeError` if a ``width`` x ``height`` raster may not be
    decoded (or converted) within the memory bound of ``max_pixels``."""
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{what} has zero size ({width}x{height})")
    bomb = Image.MAX_IMAGE_PIXELS
    if bomb is not None and width * height > bomb:
        raise ImageDecodeError(
            f"{what} claims {width}x{height} ({width * height / 1e6:.0f} MP), above the "
            f"decompression-bomb limit of {bomb / 1e6:.0f} MP: refused; downscale it first"
        )
    limit = None if max_pixels is None else DECODE_HEADROOM * max_pixels
    if limit is not None and width * height > limit:
        raise ImageDecodeError(
            f"{what} is {width}x{height} ({width * height / 1e6:.1f} MP): refused, only "
            f"{DECODE_HEADROOM} x max_pixels = {limit} pixels can be decoded within the "
            f"memory bound of max_pixels={max_pixels}; downscale it first or raise "
            "max_pixels"
        )


def downscale_rgb(rgb: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """``rgb`` (uint8 (H, W, 3)) downscaled to at most ``max_pixels`` pixels, aspect kept
    (antialiased bilinear, in uint8); the array itself when it already fits."""
    height, width = rgb.shape[:2]
    size = fit_max_pixels(width, height, max_pixels)
    if size == (width, height):
        return rgb
    return np.array(Image.fromarray(np.ascontiguousarray(rgb), "RGB").resize(
        size, Image.Resampling.BILINEAR))


def decode_image(
    source: bytes | str | Path,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    what: str = "image",
    exif_transpose: bool = False,
    downscale: bool = True,
) -> DecodedImage:
    """Decode an image file (``str``/``Path``) or encoded bytes to RGB within
    ``max_pixels`` (see the module docstring); ``what`` names it in error messages.

    ``exif_transpose`` applies the EXIF orientation (photos). ``downscale=False`` keeps
    the stored size and refuses images with more than ``max_pixels`` pixels instead (for
    data whose size must match other data, e.g. a CameraInfo).
    """
    encoded = isinstance(source, (bytes, bytearray, memoryview))
    cannot = f"cannot {'decode' if encoded else 'read'} {what}"
    try:
        with warnings.catch_warnings():
            # Sizes above PIL's bomb limit are refused by check_decode_size below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if encoded else source)
    except Image.DecompressionBombError:
        raise ImageDecodeError(
            f"{what} is a decompression bomb: its header claims more than "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP; refused") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{cannot}: not an image format PIL recognises (corrupt or "
                               "unsupported data)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{cannot}: {exc}") from None
    with img:
        width, height = img.size
        check_decode_size(width, height, None, what)
        if not downscale:
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    f"{what} is {width}x{height}: more than the {max_pixels} pixels expected")
        else:
            target = fit_max_pixels(width, height, max_pixels)
            if target != (width, height):
                img.draft("RGB", target)  # JPEG: reduced while decoding; others: no-op
            check_decode_size(*img.size, max_pixels, what)
        try:
            img.load()
            oriented = ImageOps.exif_transpose(img) if exif_transpose else img
            rgb = oriented if oriented.mode == "RGB" else oriented.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"{cannot}: {exc}") from None
        stored = (width, height) if oriented.size == img.size else (height, width)
        size = fit_max_pixels(*stored, max_pixels if downscale else None)
        if size != rgb.size:
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        return DecodedImage(np.array(rgb), stored)
