"""Loading views from folders, file lists, single images and videos."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from dvlt_core.io.images import load_sequence


def _save(path, value, size=(24, 32)):
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def test_directory_is_sorted_and_filtered(tmp_path):
    _save(tmp_path / "b.png", 20)
    _save(tmp_path / "a.jpg", 10)
    _save(tmp_path / "c.WEBP", 30)
    _save(tmp_path / "d.bmp", 40)
    (tmp_path / "notes.txt").write_text("not an image")
    seq = load_sequence(tmp_path)
    assert seq.names == ["a", "b", "c", "d"]
    assert seq.timestamps == [0.0, 1.0, 2.0, 3.0]
    assert all(img.dtype == np.uint8 and img.shape == (24, 32, 3) for img in seq.images)
    assert seq.images[1][0, 0, 0] == 20 and seq.images[3][0, 0, 0] == 40


def test_file_list_keeps_order_and_single_image(tmp_path):
    _save(tmp_path / "x.png", 1)
    _save(tmp_path / "y.png", 2)
    seq = load_sequence([tmp_path / "y.png", str(tmp_path / "x.png")])
    assert seq.names == ["y", "x"]
    single = load_sequence(tmp_path / "x.png")
    assert len(single) == 1 and single.images[0][0, 0, 0] == 1


def test_grey_and_rgba_become_rgb_and_exif_rotation_applies(tmp_path):
    Image.fromarray(np.full((10, 20), 7, np.uint8), mode="L").save(tmp_path / "g.png")
    Image.fromarray(np.full((10, 20, 4), 9, np.uint8), mode="RGBA").save(tmp_path / "r.png")
    img = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "e.jpg", exif=exif)
    seq = load_sequence(tmp_path)
    shapes = dict(zip(seq.names, (i.shape for i in seq.images), strict=True))
    assert shapes == {"e": (20, 10, 3), "g": (10, 20, 3), "r": (10, 20, 3)}


def _write_video(path, fps=10, frames=25, size=(48, 64)):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            array = np.full((*size, 3), 10 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_is_subsampled_to_the_requested_rate(tmp_path):
    path = tmp_path / "clip.mp4"
    _write_video(path)
    seq = load_sequence(path, fps=2.0)
    np.testing.assert_allclose(seq.timestamps, [0.0, 0.5, 1.0, 1.5, 2.0], atol=1e-6)
    assert seq.names[0] == "clip_000000" and len(seq) == 5
    # frame i has value 10 * i: kept frames are 0, 5, 10, 15, 20
    means = [float(img.mean()) for img in seq.images]
    np.testing.assert_allclose(means, [0, 50, 100, 150, 200], atol=4)
    assert len(load_sequence(path, fps=None)) == 25


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda p: p / "missing", FileNotFoundError, "does not exist"),
        (lambda p: p, ValueError, "holds no images"),
        (lambda p: (p / "a.txt").write_text("x") and p / "a.txt", ValueError, "unsupported"),
        (lambda p: (p / "x.png").write_bytes(b"junk") and p / "x.png", ValueError, "cannot read"),
        (lambda p: (p / "bad.mp4").write_bytes(b"junk") and p / "bad.mp4", ValueError, "video"),
    ],
)
def test_bad_inputs_say_what_is_wrong(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        load_sequence(make(tmp_path))


def test_empty_or_missing_file_list(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_sequence([])
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_sequence([tmp_path / "nope.png"])


def test_images_and_video_frames_are_decoded_within_max_pixels(tmp_path):
    _save(tmp_path / "big.png", 50, size=(60, 80))
    seq = load_sequence(tmp_path / "big.png", max_pixels=1200)
    assert seq.images[0].shape == (30, 40, 3) and seq.source_sizes == [(80, 60)]
    assert seq.downscaled == [0]
    assert load_sequence(tmp_path / "big.png").downscaled == []
    path = tmp_path / "clip.mp4"
    _write_video(path, frames=3)  # 64x48 frames
    seq = load_sequence(path, fps=None, max_pixels=768)
    assert [img.shape for img in seq.images] == [(24, 32, 3)] * 3
    assert seq.source_sizes == [(64, 48)] * 3 and seq.downscaled == [0, 1, 2]
    np.testing.assert_allclose([img.mean() for img in seq.images], [0, 10, 20], atol=4)
    with pytest.raises(ValueError, match=r"video .*clip.mp4 is 64x48 .* refused"):
        load_sequence(path, max_pixels=700)  # 4 x 700 < 64 x 48
