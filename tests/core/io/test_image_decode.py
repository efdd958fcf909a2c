"""Bounded image decoding: the header is checked first, JPEGs are reduced while decoding,
what is too large to decode within ``max_pixels`` is refused, the rest downscaled."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from dvlt_core.io.image_decode import (
    DECODE_HEADROOM,
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    downscale_rgb,
    fit_max_pixels,
)
from dvlt_core.testing.images import constant_png

MAX_PIXELS = 100 * 75


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _smooth(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)


def test_fit_max_pixels_keeps_the_aspect_within_the_budget():
    assert fit_max_pixels(640, 480, None) == (640, 480)
    assert fit_max_pixels(640, 480, 640 * 480) == (640, 480)
    w, h = fit_max_pixels(4000, 3000, MAX_PIXELS)
    assert (w, h) == (100, 75) and w * h <= MAX_PIXELS
    w, h = fit_max_pixels(9000, 13, 1000)
    assert w * h <= 1000 and h >= 1


def test_small_images_decode_exactly_and_writable():
    rgb = _smooth(30, 40)
    decoded = decode_image(_encode(rgb, "PNG"), MAX_PIXELS)
    np.testing.assert_array_equal(decoded.rgb, rgb)
    assert decoded.source_size == (40, 30)
    assert decoded.rgb.flags.writeable  # torch.from_numpy would warn on a read-only one


def test_a_large_jpeg_is_reduced_while_decoding_then_downscaled():
    rgb = _smooth(600, 800)  # 64 x MAX_PIXELS: refused unless reduced while decoding
    decoded = decode_image(_encode(rgb, "JPEG", quality=95), MAX_PIXELS)
    assert decoded.rgb.shape == (75, 100, 3) and decoded.source_size == (800, 600)
    expected = downscale_rgb(rgb, MAX_PIXELS).astype(int)
    assert np.abs(decoded.rgb.astype(int) - expected).mean() < 4  # JPEG + DCT scaling


def test_a_png_between_the_budget_and_the_decode_limit_is_downscaled():
    rgb = _smooth(150, 200)  # 4 x MAX_PIXELS: decodable, then downscaled
    decoded = decode_image(_encode(rgb, "PNG"), MAX_PIXELS)
    np.testing.assert_array_equal(decoded.rgb, downscale_rgb(rgb, MAX_PIXELS))
    assert decoded.rgb.shape == (75, 100, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (constant_png(201, 150), "only 4 x max_pixels = 30000 pixels can be decoded"),
        (constant_png(9000, 9000, rows=1), r"9000x9000 \(81.0 MP\): refused"),
        (constant_png(10_000, 10_000, rows=1), "above the decompression-bomb limit"),
        (constant_png(100_000, 100_000, rows=1), "decompression bomb"),
        (_encode(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8),
                 "PNG")[:4000], "cannot decode .* truncated"),
        (b"\x89PNG\r\n\x1a\nnot really", "cannot decode"),
    ],
)
def test_refusals_are_one_line_and_name_the_image(data, reason):
    with pytest.raises(ImageDecodeError, match=reason) as caught:
        decode_image(data, MAX_PIXELS, what="test.png")
    assert "\n" not in str(caught.value) and "test.png" in str(caught.value)


def test_without_downscaling_larger_images_are_refused():
    data = _encode(_smooth(30, 40), "PNG")
    assert decode_image(data, 40 * 30, downscale=False).rgb.shape == (30, 40, 3)
    with pytest.raises(ImageDecodeError, match="more than the 1199 pixels expected"):
        decode_image(data, 40 * 30 - 1, downscale=False)


def test_peak_memory_is_bounded_by_max_pixels(tmp_path):
    """A subprocess decodes a 9000x9000 PNG (79 KB; refused from its header) and a
    9000x9000 JPEG (reduced while decoding): its peak RSS grows by far less than the
    raster (81 MP: 324 MB as PIL RGB, 243 MB as an array) would take."""
    (tmp_path / "bomb.png").write_bytes(constant_png(9000, 9000))
    Image.radial_gradient("L").resize((9000, 9000)).save(tmp_path / "big.jpg", quality=80)
    script = textwrap.dedent(f"""
        import resource, sys
        from dvlt_core.io.image_decode import ImageDecodeError, decode_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_image(sys.argv[1])
            raise SystemExit("the 81 MP PNG was decoded")
        except ImageDecodeError:
            pass
        decoded = decode_image(sys.argv[2])
        assert decoded.rgb.shape[0] * decoded.rgb.shape[1] <= {DEFAULT_MAX_PIXELS}
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bomb.png"),
                          str(tmp_path / "big.jpg")], capture_output=True, text=True,
                         check=True)
    # What the decoder may hold: the reduced raster and its RGB conversion (4 bytes per
    # pixel in PIL), the downscaled image and its array, with room for allocator slack.
    bound = 8 * 4 * DECODE_HEADROOM * DEFAULT_MAX_PIXELS
    assert int(out.stdout) < bound, f"peak RSS grew by {int(out.stdout) / 2**20:.0f} MiB"


def test_preprocessing_a_read_only_array_does_not_warn():
    """Decoded buffers may be read-only; torch warns (once per process, hence the
    subprocess) when it wraps one without a copy."""
    script = textwrap.dedent("""
        import warnings
        import numpy as np
        from dvlt_core.io.images import preprocess
        warnings.simplefilter("error")
        image = np.frombuffer(bytes(28 * 42 * 3), np.uint8).reshape(28, 42, 3)
        assert not image.flags.writeable
        preprocess([image], img_size=42)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
