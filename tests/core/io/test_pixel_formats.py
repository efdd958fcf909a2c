"""Raw camera layouts to RGB: packed YUV 4:2:2 and bilinear Bayer demosaicing."""

from __future__ import annotations

import numpy as np
import pytest

from dvlt_core.io.pixel_formats import BAYER_PATTERNS, demosaic_bilinear, yuv422_to_rgb


def yuv422_of(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 (H, W, 2) of ``rgb`` (BT.601 video range; chroma of each pixel pair
    averaged), the way a camera would send it."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    u = (u[:, 0::2] + u[:, 1::2]) / 2
    v = (v[:, 0::2] + v[:, 1::2]) / 2
    y0, y1 = y[:, 0::2], y[:, 1::2]
    parts = (u, y0, v, y1) if order == "uyvy" else (y0, u, y1, v)
    packed = np.stack(parts, axis=-1).reshape(rgb.shape[0], rgb.shape[1], 2)
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8)


def mosaic_of(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer mosaic a ``pattern`` sensor records of ``rgb``."""
    out = np.empty(rgb.shape[:2], np.uint8)
    for index, letter in enumerate(pattern):
        dy, dx = divmod(index, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(letter)]
    return out


@pytest.mark.parametrize("order", ["uyvy", "yuyv"])
def test_yuv422_round_trips_colours(order):
    rng = np.random.default_rng(1)
    # Chroma is shared by a pixel pair: colours constant over each pair come back (up to
    # 8-bit rounding of Y, U and V: 2 levels), and so do greys that differ within a pair.
    pairs = np.repeat(rng.integers(20, 235, (5, 3, 3), dtype=np.uint8), 2, axis=1)
    np.testing.assert_allclose(yuv422_to_rgb(yuv422_of(pairs, order), order), pairs, atol=2)
    grey = np.repeat(rng.integers(16, 235, (5, 6, 1), dtype=np.uint8), 3, axis=2)
    np.testing.assert_allclose(yuv422_to_rgb(yuv422_of(grey, order), order), grey, atol=1)


def test_yuv422_byte_orders_differ_and_odd_widths_are_refused():
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[..., 2] = 200  # blue: U far from 128
    packed = yuv422_of(rgb, "uyvy")
    assert not np.array_equal(yuv422_to_rgb(packed, "yuyv"), rgb)
    with pytest.raises(ValueError, match="even width"):
        yuv422_to_rgb(np.zeros((2, 3, 2), np.uint8), "uyvy")


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_demosaic_keeps_constant_colours_and_linear_ramps(pattern):
    flat = np.broadcast_to(np.array([200, 90, 30], np.uint8), (7, 9, 3)).copy()
    np.testing.assert_array_equal(demosaic_bilinear(mosaic_of(flat, pattern), pattern), flat)
    # A ramp in each channel is linear, so bilinear interpolation is exact inside the
    # image (a border pixel misses the samples beyond the edge).
    y, x = np.mgrid[0:10, 0:12]
    ramp = np.stack([10 * x + 5, 8 * y + 20, 6 * x + 4 * y + 10], -1).astype(np.uint8)
    out = demosaic_bilinear(mosaic_of(ramp, pattern), pattern)
    np.testing.assert_array_equal(out[1:-1, 1:-1], ramp[1:-1, 1:-1])
    assert np.abs(out.astype(int) - ramp).max() <= 10  # borders: one-sided means


def test_demosaic_needs_a_whole_bayer_cell():
    with pytest.raises(ValueError, match="2x2"):
        demosaic_bilinear(np.zeros((1, 8), np.uint8), "rggb")
