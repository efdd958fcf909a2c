"""sensor_msgs/Image and CompressedImage <-> numpy, with validation of every field.

Replaces cv_bridge where it cannot be installed, for the encodings the node handles.
"""

from __future__ import annotations

import io
import sys

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

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
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


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
    """Return an (H, W, 3) uint8 RGB array from a colour or mono8 image message."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(
            f"image encoding '{msg.encoding}' is not a colour encoding the model can use "
            f"(use one of {', '.join(COLOR_ENCODINGS)})"
        )
    return to_rgb8(image_to_array(msg), msg.encoding)


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Convert pixels in one of COLOR_ENCODINGS to contiguous (H, W, 3) RGB uint8."""
    if encoding == "mono8":
        return np.repeat(pixels[..., None], 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1])
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
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = as_uint8_array(pixels)
    return msg


def compressed_to_rgb8(msg: CompressedImage) -> np.ndarray:
    """Decode a jpeg or png CompressedImage to (H, W, 3) RGB uint8."""
    from PIL import Image as PILImage

    fmt = msg.format.lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise ImageConversionError(
            f"unsupported compressed image format '{msg.format}' (use jpeg or png)"
        )
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageConversionError(f"cannot decode {msg.format} image: {exc}") from exc
