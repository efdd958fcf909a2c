"""Raw camera pixel layouts -> uint8 RGB, vectorised with numpy (no OpenCV).

* Packed YUV 4:2:2 (``uyvy``: U Y0 V Y1, ``yuyv``: Y0 U Y1 V per pixel pair): ITU-R
  BT.601 with video range (Y in 16..235, chroma in 16..240), each chroma pair shared by
  its two pixels. That is what cv_bridge/OpenCV do for these encodings.
* 8-bit Bayer mosaics (``rggb``, ``bggr``, ``gbrg``, ``grbg``: the colours of the top-left
  2x2 cell, row by row): bilinear demosaicing. Each colour is the weighted mean of its
  samples in the 3x3 neighbourhood (weights 1-2-1 for red and blue, the 4-neighbour cross
  for green; samples outside the image are left out), so a pixel keeps its own sample and
  gets the mean of the nearest 2 or 4 samples of each other colour.
"""

from __future__ import annotations

import numpy as np

YUV422_ORDERS = ("uyvy", "yuyv")
BAYER_PATTERNS = ("rggb", "bggr", "gbrg", "grbg")

_KERNEL_RB = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], np.float32)
_KERNEL_G = np.array([[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]], np.float32)


def yuv422_to_rgb(packed: np.ndarray, order: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) from packed 4:2:2 pixels ``packed`` (H, W, 2) uint8.

    ``order`` is ``"uyvy"`` or ``"yuyv"``; W must be even (pixels come in pairs).
    """
    if order not in YUV422_ORDERS:
        raise ValueError(f"YUV 4:2:2 order must be one of {YUV422_ORDERS}, got {order!r}")
    height, width = packed.shape[:2]
    if packed.dtype != np.uint8 or packed.shape[2:] != (2,):
        raise ValueError(f"expected uint8 (H, W, 2) packed YUV, got {packed.dtype} "
                         f"{packed.shape}")
    if width % 2:
        raise ValueError(f"YUV 4:2:2 needs an even width (pixel pairs share chroma), got "
                         f"{width}")
    pairs = packed.reshape(height, width // 2, 4).astype(np.float32)
    if order == "uyvy":
        u, y0, v, y1 = (pairs[..., i] for i in range(4))
    else:
        y0, u, y1, v = (pairs[..., i] for i in range(4))
    luma = (np.stack([y0, y1], axis=-1).reshape(height, width) - 16.0) * (255.0 / 219.0)
    u = np.repeat(u - 128.0, 2, axis=1) * (255.0 / 224.0)
    v = np.repeat(v - 128.0, 2, axis=1) * (255.0 / 224.0)
    # BT.601: R = Y + 1.402 V, G = Y - 0.344136 U - 0.714136 V, B = Y + 1.772 U.
    rgb = np.stack([luma + 1.402 * v, luma - 0.344136 * u - 0.714136 * v, luma + 1.772 * u],
                   axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def demosaic_bilinear(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an 8-bit Bayer ``mosaic`` (H, W) with ``pattern``."""
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"Bayer pattern must be one of {BAYER_PATTERNS}, got {pattern!r}")
    if mosaic.dtype != np.uint8 or mosaic.ndim != 2:
        raise ValueError(f"expected a uint8 (H, W) mosaic, got {mosaic.dtype} {mosaic.shape}")
    height, width = mosaic.shape
    if height < 2 or width < 2:
        raise ValueError(f"a Bayer mosaic needs at least one 2x2 cell, got {width}x{height}")
    rows = np.arange(height)[:, None] % 2
    cols = np.arange(width)[None, :] % 2
    cell = rows * 2 + cols  # index of each pixel in its 2x2 cell
    samples = mosaic.astype(np.float32)
    out = np.empty((height, width, 3), np.uint8)
    for channel, colour in enumerate("rgb"):
        sites = np.zeros((height, width), np.float32)
        for index, letter in enumerate(pattern):
            if letter == colour:
                sites[cell == index] = 1.0
        kernel = _KERNEL_G if colour == "g" else _KERNEL_RB
        value = _filter3(samples * sites, kernel) / _filter3(sites, kernel)
        out[..., channel] = np.clip(np.rint(value), 0, 255)
    return out


def _filter3(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 correlation of ``image`` with ``kernel``, zero outside the image."""
    height, width = image.shape
    padded = np.pad(image, 1)
    total = np.zeros_like(image)
    for dy in range(3):
        for dx in range(3):
            if kernel[dy, dx]:
                total += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return total
