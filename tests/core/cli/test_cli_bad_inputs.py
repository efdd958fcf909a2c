"""``dvlt-reconstruct`` on bad images: each exits 2 with one line saying what to fix, and
no input, whatever its header claims, takes memory beyond a bound set by --max-pixels."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from dvlt_core.cli.reconstruct import main
from dvlt_core.io.image_decode import DECODE_HEADROOM, DEFAULT_MAX_PIXELS
from dvlt_core.testing.images import constant_png

# Peak RSS growth of the command (after its imports) in a subprocess, in bytes.
RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from dvlt_core.cli.reconstruct import main
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = main(sys.argv[1:])
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"rss_growth {grown * 1024}", file=sys.stderr)
    sys.exit(code)
""")
# Decoding may hold a reduced raster of up to DECODE_HEADROOM x max_pixels, its RGB
# conversion (4 bytes a pixel in PIL), the downscaled image and its array; allow 8x that
# for allocator slack. An 81 MP image decoded in full needs several times more.
RSS_BOUND = 8 * 4 * DECODE_HEADROOM * DEFAULT_MAX_PIXELS


def _run_measured(args: list[str]) -> tuple[int, str, int]:
    """(exit code, stderr without the measurement, peak RSS growth in bytes)."""
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, *args], capture_output=True,
                         text=True, timeout=600)
    lines = out.stderr.splitlines()
    growth = int(lines[-1].split()[1])
    return out.returncode, "\n".join(lines[:-1]), growth


def _error_line(err: str) -> str:
    (line,) = [line for line in err.splitlines() if line.startswith("dvlt-reconstruct: error")]
    assert "Traceback" not in err
    return line


def test_a_decompression_bomb_png_is_refused_from_its_header(tmp_path):
    """The 79 KB greyscale PNG of 9000x9000 that made dvlt-reconstruct peak at 13 GB."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(constant_png(9000, 9000))
    empty = tmp_path / "no_checkpoint"
    empty.mkdir()  # the refusal must come before any checkpoint is read
    code, err, growth = _run_measured([str(bomb), "--checkpoint", str(empty),
                                       "--out", str(tmp_path / "out")])
    assert code == 2
    line = _error_line(err)
    assert "bomb.png is 9000x9000 (81.0 MP): refused" in line and "--max-pixels" not in line
    assert "raise max_pixels" in line
    assert growth < RSS_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def test_a_huge_jpeg_is_reduced_while_decoding(tmp_path):
    big = tmp_path / "big.jpg"
    Image.radial_gradient("L").resize((9000, 9000)).save(big, quality=80)
    empty = tmp_path / "no_checkpoint"
    empty.mkdir()
    code, err, growth = _run_measured([str(big), "--checkpoint", str(empty),
                                       "--out", str(tmp_path / "out")])
    # The image was loaded (downscaled while decoded); then the missing weights stop it.
    assert code == 2 and "1 view(s) loaded" in err
    assert "big: 9000x9000 -> 1440x1440" in err and "model.safetensors" in _error_line(err)
    assert growth < RSS_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def test_max_pixels_downscales_and_outputs_follow(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "scene"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(
            folder / f"{name}.png")
    out = tmp_path / "out"
    assert main([str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--num-steps", "1", "--device", "cpu", "--max-pixels", "4800"]) == 0
    assert "2 view(s) above --max-pixels 4800 were downscaled" in capsys.readouterr().err
    with np.load(out / "reconstruction.npz") as z:
        assert z["depth"].shape == (2, 60, 80)


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ((1, 1), "1x1 is smaller than one 14 px patch per side"),
        ((1, 5000), "5000x1 is too elongated"),
        ((13, 40), "40x13 is smaller than one 14 px patch per side"),
        ((30, 1500), "at img_size 112"),  # keeps a patch at 504 px, not at the model's 112
    ],
)
def test_degenerate_images_exit_2(checkpoint, tmp_path, capsys, size, reason):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(path)
    code = main([str(path), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    assert code == 2
    line = _error_line(capsys.readouterr().err)
    assert "image 'tiny'" in line and reason in line


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: constant_png(100_000, 100_000, rows=1), "decompression bomb"),
        (lambda: constant_png(10_000, 10_000, rows=1), "above the decompression-bomb limit"),
        (lambda: constant_png(640, 480)[:200], "cannot read image .* truncated"),
    ],
)
def test_bombs_and_truncated_files_exit_2(tmp_path, capsys, make, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(make())
    code = main([str(path), "--checkpoint", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert re.search(reason, _error_line(capsys.readouterr().err))


def test_max_pixels_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--max-pixels", "0"])
    assert stop.value.code == 2 and "--max-pixels" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "module", "package"),
    [("--glb", "trimesh", "trimesh"), ("--rrd", "rerun", "rerun-sdk")],
)
def test_an_export_without_its_package_exits_2_before_any_work(
    flag, module, package, tmp_path, capsys, monkeypatch
):
    # The 'viewers' extra not installed: the import fails as it would (None in sys.modules).
    monkeypatch.setitem(sys.modules, module, None)
    image = tmp_path / "a.png"
    image.write_bytes(constant_png(64, 48))
    out = tmp_path / "out"
    assert main([str(image), "--checkpoint", str(tmp_path / "none"), "--out", str(out), flag]) == 2
    line = _error_line(capsys.readouterr().err)
    assert flag in line and package in line and "pip install 'dvlt_ros[viewers]'" in line
    assert not out.exists()  # refused before loading anything or writing


def test_serve_without_viser_exits_2_with_the_install_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "viser", None)
    assert main(["--serve"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "--serve" in line and "viser" in line and "pip install 'dvlt_ros[viewers]'" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--serve", "a.png"], "--serve takes its inputs from the browser"),
        ([], "give INPUTS"),
        (["--serve", "--port", "70000"], "not a TCP port"),
    ],
)
def test_serve_and_inputs_are_one_or_the_other(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_serve_on_an_address_of_no_interface_here_exits_2(capsys):
    pytest.importorskip("viser", reason="the 'viewers' extra (viser) is not installed")
    assert main(["--serve", "--host", "203.0.113.1", "--port", "8080"]) == 2
    err = capsys.readouterr().err
    assert "other machines" in err  # the warning for a non-loopback address
    assert "cannot listen on 203.0.113.1:8080" in _error_line(err)


@pytest.mark.parametrize(("dvlt_checkpoint", "message"), [
    (False, "the da3 backend needs a checkpoint: a folder with model.safetensors and "
            "config.json, or a Hub id such as depth-anything/DA3-SMALL"),
    (True, "is not a Depth Anything 3 checkpoint (a config.json without model_name)"),
])
def test_backend_da3_without_a_da3_checkpoint_exits_2(dvlt_checkpoint, message, tmp_path,
                                                      capsys):
    """A DVLT checkpoint (or none) given to the second model: one line saying what it needs."""
    image = tmp_path / "a.png"
    image.write_bytes(constant_png(64, 48))
    checkpoint = []
    if dvlt_checkpoint:
        folder = tmp_path / "dvlt"
        folder.mkdir()
        save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"num_steps": 4}))  # a DVLT config
        checkpoint = ["--checkpoint", str(folder)]
    out = tmp_path / "out"
    assert main([str(image), "--backend", "da3", *checkpoint, "--out", str(out)]) == 2
    assert message in _error_line(capsys.readouterr().err)
    assert not out.exists()
