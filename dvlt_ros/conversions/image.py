"""sensor_msgs/Image and CompressedImage <-> numpy, with validation of every field.

Replaces cv_bridge where it cannot be installed, for the encodings the node handles.
Colour input (:func:`image_to_rgb8`): rgb8, bgr8, rgba8, bgra8, mono8, packed YUV 4:2:2
(``uyvy``/``yuv422``, ``yuyv``/``yuv422_yuy2``; BT.601 video range) and 8-bit Bayer
mosaics (``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8``; bilinear
demosaicing), see :mod:`dvlt_core.io.pixel_formats`. Compressed input is decoded with a
pixel budget (:func:`dvlt_core.io.image_decode.decode_image`).
"""

from __future__ import annotations

import sys

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from dvlt_core.io.image_decode import DecodedImage, ImageDecodeError, decode_image
from dvlt_core.io.pixel_formats import BAYER_PATTERNS, demosaic_bilinear, yuv422_to_rgb
from dvlt_ros.conversions._bytes import as_uint8_array

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    # packed YUV 4:2:2: two bytes per pixel, a chroma pair per two pixels
    "uyvy": (np.dtype(np.uint8), 2),
    "yuv422": (np.dtype(np.uint8), 2),
    "yuyv": (np.dtype(np.uint8), 2),
    "yuv422_yuy2": (np.dtype(np.uint8), 2),
    **{f"bayer_{pattern}8": (np.dtype(np.uint8), 1) for pattern in BAYER_PATTERNS},
}
#: Packed YUV 4:2:2 encodings and their byte order (``yuv422`` is the older name of uyvy).
YUV422_ENCODINGS = {"uyvy": "uyvy", "yuv422": "uyvy", "yuyv": "yuyv", "yuv422_yuy2": "yuyv"}
BAYER_ENCODINGS = {f"bayer_{pattern}8": pattern for pattern in BAYER_PATTERNS}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", *YUV422_ENCODINGS,
                   *BAYER_ENCODINGS)


class ImageConversionError(ValueError):
    """An image message that cannot be converted; the message says why."""


def image_to_array(msg: Image) -> np.ndarray:
    """Return the pixels of ``msg`` as an (H, W) or (H, W, C) array in the message's encoding.

    Handles row padding (``step`` larger than a row) and big-endian data. Raises
    ImageConversionError for unknown encodings, zero sizes and inconsistent buffers.
    """
    if msg.encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding '{msg.encoding}' (supported: {', '.join(ENCODINGS)})"
        )
    dtype, channels = ENCODINGS[msg.encoding]
    height, width = int(msg.height), int(msg.width)
    if height == 0 or width == 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ImageConversionError(
            f"image step {msg.step} is smaller than a {msg.encoding} row of {width} pixels "
            f"({row_bytes} bytes)"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < msg.step * height:
        raise ImageConversionError(
            f"image data has {data.size} bytes, expected step*height = {msg.step * height}"
        )
    rows = data[: msg.step * height].reshape(height, msg.step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    pixels = pixels.astype(dtype, copy=False).reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


def image_to_rgb8(msg: Image) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB array from an image message in one of
    COLOR_ENCODINGS (see the module docstring)."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(
            f"image encoding '{msg.encoding}' is not a colour encoding the model can use "
            f"(use one of {', '.join(COLOR_ENCODINGS)}, or image_transport compressed)"
        )
    return to_rgb8(image_to_array(msg), msg.encoding)


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Convert pixels in one of COLOR_ENCODINGS to contiguous (H, W, 3) RGB uint8."""
    if encoding == "mono8":
        return np.repeat(pixels[..., None], 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    try:
        if encoding in YUV422_ENCODINGS:
            return yuv422_to_rgb(pixels, YUV422_ENCODINGS[encoding])
        if encoding in BAYER_ENCODINGS:
            return demosaic_bilinear(pixels, BAYER_ENCODINGS[encoding])
    except ValueError as exc:
        raise ImageConversionError(f"{encoding} image: {exc}") from None
    return np.ascontiguousarray(pixels[..., :3])


def array_to_image(pixels: np.ndarray, encoding: str, header=None) -> Image:
    """Build an Image message from an array whose dtype and channels match ``encoding``."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding '{encoding}'")
    dtype, channels = ENCODINGS[encoding]
    if pixels.dtype != dtype or (pixels.ndim == 3 and pixels.shape[2] != channels) or (
        pixels.ndim == 2 and channels != 1
    ):
        raise ImageConversionError(
            f"array of dtype {pixels.dtype} and shape {pixels.shape} does not match "
            f"encoding {encoding} ({dtype}, {channels} channel(s))"
        )
    msg = Image(check_fields=True)  # keeps ``data`` as given, without copying it
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = as_uint8_array(pixels)
    return msg


def decode_compressed(msg: CompressedImage, max_pixels: int | None = None) -> DecodedImage:
    """Decode a jpeg or png CompressedImage to (H, W, 3) RGB uint8 with at most
    ``max_pixels`` pixels (None: no budget but PIL's decompression-bomb limit); refusals
    and corrupt data raise ImageConversionError."""
    fmt = msg.format.lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise ImageConversionError(
            f"unsupported compressed image format '{msg.format}' (use jpeg or png)"
        )
    try:
        return decode_image(bytes(msg.data), max_pixels, what=f"{msg.format} image")
    except ImageDecodeError as exc:
        raise ImageConversionError(str(exc)) from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageConversionError(f"cannot decode {msg.format} image: {exc}") from None
