"""The browser demo of ``dvlt-reconstruct --serve`` in a real headless Chromium: images are
uploaded through the page's file input, Reconstruct is clicked, the screenshot must show the
uploaded images' colours in the 3D view (content, not pixels), and the downloaded
``scene.glb`` must open in trimesh. Also the demo's request handling without a browser."""

from __future__ import annotations

import argparse
import io
import os
import socket
import time

import numpy as np
import pytest
from PIL import Image

from dvlt_core.cli.reconstruct import build_parser

viser = pytest.importorskip("viser", reason="the 'viewers' extra (viser) is not installed")
trimesh = pytest.importorskip("trimesh", reason="the 'viewers' extra (trimesh) is not installed")

from chromium_cdp import Chromium, find_chromium  # noqa: E402 (needs websockets, from viser)

from dvlt_core.cli.browser_demo.app import BrowserDemo, is_loopback  # noqa: E402
from dvlt_core.cli.browser_demo.uploads import UploadFolder, UploadRefusedError, safe_file_name  # noqa: E402

ORANGE = (255, 128, 0)
GREEN = (0, 160, 80)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_colour_image(path, flip: bool) -> None:
    """96x64 image: left half orange, right half green (swapped with ``flip``), a little noise
    so the network sees texture."""
    image = np.zeros((64, 96, 3), np.int16)
    left, right = (GREEN, ORANGE) if flip else (ORANGE, GREEN)
    image[:, :48], image[:, 48:] = left, right
    image += np.random.default_rng(int(flip)).integers(-6, 7, image.shape, dtype=np.int16)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)


def _fraction_near(png: bytes, colour: tuple[int, int, int], tolerance: int = 40) -> float:
    """Fraction of the screenshot's pixels within ``tolerance`` of ``colour`` per channel.
    Rendering shades and blends point colours, hence the generous band; the test asks
    whether the colour is there, not where."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16)
    return float((np.abs(rgb - np.array(colour)) <= tolerance).all(axis=-1).mean())


def _demo_args(checkpoint, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args(
        ["--serve", "--checkpoint", str(checkpoint), "--device", "cpu", "--num-steps", "2",
         "--pose-mode", "upstream", "--keep-failed-views", *extra]
    )


@pytest.fixture
def demo(checkpoint):
    app = BrowserDemo(_demo_args(checkpoint), port=_free_port())
    yield app
    app.close()


@pytest.fixture
def chromium_path():
    path = find_chromium()
    if path is None:
        message = ("chromium is not installed (apt-get install chromium): the browser demo "
                   "test needs a real headless Chromium")
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/setup.sh installs it in CI")
        pytest.skip(message)
    return path


def test_upload_reconstruct_see_and_download_in_chromium(demo, chromium_path, tmp_path):
    images = [tmp_path / "cam_a.png", tmp_path / "cam_b.png"]
    for flip, path in enumerate(images):
        _two_colour_image(path, bool(flip))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    assert demo.url.startswith("http://127.0.0.1:")

    browser = Chromium(chromium_path, demo.url, downloads)
    try:
        browser.wait_for("document.querySelector('input[type=file]') !== null")
        before = browser.screenshot()
        for count, path in enumerate(images, start=1):
            browser.set_files("input[type=file]", [path])
            deadline = time.monotonic() + 60
            while len(demo.uploaded) < count and time.monotonic() < deadline:
                time.sleep(0.1)
        assert [p.name for p in demo.uploaded] == ["cam_a.png", "cam_b.png"]

        browser.click_button("Reconstruct")
        assert demo.finished.wait(300), demo.status
        assert demo.status.startswith("done: 2 view(s), K=2"), demo.status

        # The point cloud carries the images' colours: poll until the page has drawn it.
        after, deadline = browser.screenshot(), time.monotonic() + 60
        while min(_fraction_near(after, ORANGE), _fraction_near(after, GREEN)) < 0.005:
            (tmp_path / "screenshot.png").write_bytes(after)
            assert time.monotonic() < deadline, (
                f"the 3D view never showed the point cloud: see {tmp_path / 'screenshot.png'}")
            time.sleep(0.5)
            after = browser.screenshot()
        (tmp_path / "screenshot.png").write_bytes(after)
        assert _fraction_near(before, ORANGE) < 0.001 and _fraction_near(before, GREEN) < 0.001
        assert np.asarray(Image.open(io.BytesIO(after)).convert("L")).std() > 10  # not blank

        browser.click_button("Download .glb")
        glb, deadline = downloads / "scene.glb", time.monotonic() + 60
        while not glb.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert glb.is_file(), f"no download arrived: {sorted(downloads.iterdir())}"
    finally:
        browser.close()
    scene = trimesh.load(glb, file_type="glb")
    assert "points" in scene.geometry
    assert {"frustum_cam_a", "frustum_cam_b"} <= set(scene.geometry)
    assert len(scene.geometry["points"].vertices) > 1000


def test_requests_are_validated_like_the_command_line(demo, tmp_path):
    demo.run_request()
    assert demo.status == "error: nothing uploaded: add images or a video first"

    demo._on_upload(argparse.Namespace(name="broken.png", content=b"not a png"))
    demo.run_request()
    assert demo.status.startswith("error: cannot read image"), demo.status

    demo._on_clear()
    demo._on_upload(argparse.Namespace(name="notes.txt", content=b"hello"))
    demo.run_request()
    assert demo.status.startswith("error: unsupported input"), demo.status
    assert demo.finished.is_set()


def test_uploads_keep_only_the_file_name_and_respect_the_cap(tmp_path):
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    for bad in ("", "..", "dir/..", " ", "a\0b"):
        with pytest.raises(UploadRefusedError):
            safe_file_name(bad)
    folder = UploadFolder(max_bytes=10)
    try:
        first = folder.add("a.png", b"12345")
        second = folder.add("a.png", b"12345")  # same name: kept apart, in order
        assert first != second and [p.read_bytes() for p in folder.files] == [b"12345"] * 2
        with pytest.raises(UploadRefusedError, match="past"):
            folder.add("b.png", b"x")
        folder.clear()
        assert folder.files == [] and not first.exists()
    finally:
        folder.close()


def test_only_loopback_addresses_count_as_local():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_a_page_others_can_reach_runs_only_the_servers_checkpoint(checkpoint):
    """Locked (the default off loopback; asked for here, so the test listens on loopback
    only): what a browser sends for the backend or checkpoint is never used, and neither
    the page nor its messages show a path of the server."""
    app = BrowserDemo(_demo_args(checkpoint), port=_free_port(), locked=True)
    try:
        assert app._checkpoint.disabled and app._backend_choice.disabled
        assert str(checkpoint) not in app._checkpoint.value
        assert app._checkpoint.value == checkpoint.name
        app._checkpoint.value = "/etc/passwd"  # what a crafted client could send
        app._backend_choice.value = "onnxruntime"
        args = app.request_args()
        assert (args.backend, args.checkpoint) == ("torch", str(checkpoint))

        app._on_upload(argparse.Namespace(name="broken.png", content=b"not a png"))
        app.run_request()
        assert app.status.startswith("error: cannot read image broken.png"), app.status
        assert "/" not in app.status.split(":")[1]
    finally:
        app.close()
