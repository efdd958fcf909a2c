"""``dvlt-reconstruct`` end to end, in-process, on generated images and a small checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dvlt_core.cli.reconstruct import _unique, main


@pytest.fixture
def scene(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    rng = np.random.default_rng(0)
    shapes = {"a": (60, 80), "b": (60, 80), "c": (80, 60)}  # c is portrait: padded
    for name, shape in shapes.items():
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(
            folder / f"{name}.png"
        )
    return folder, shapes


def _read_ply_count(path):
    data = path.read_bytes()
    header = data[: data.index(b"end_header\n")].decode("ascii")
    count = int(header.split("element vertex ")[1].split()[0])
    assert len(data) - len(header) - len("end_header\n") == 15 * count
    return count


def test_folder_to_all_outputs(checkpoint, scene, tmp_path, capsys):
    folder, shapes = scene
    out = tmp_path / "out"
    code = main([str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--num-steps", "2", "--pose-mode", "upstream", "--device", "cpu",
                 "--conf-threshold", "30%", "--keep-failed-views"])
    assert code == 0
    assert "K=2" in capsys.readouterr().err

    with np.load(out / "reconstruction.npz") as z:
        assert list(z["names"]) == ["a", "b", "c"]
        assert z["depth_2"].shape == shapes["c"] and z["world_points_0"].shape == (60, 80, 3)
        assert z["extrinsics_c2w"].shape == (3, 4, 4) and z["intrinsics"].shape == (3, 3, 3)
        assert np.isfinite(z["extrinsics_c2w"]).all()
        assert int(z["num_steps"]) == 2
        valid_pixels = sum(int(z[f"valid_{i}"].sum()) for i in range(3))

    points = _read_ply_count(out / "points.ply")
    assert 0.6 * valid_pixels <= points <= 0.75 * valid_pixels  # ~30% dropped

    cameras = json.loads((out / "cameras.json").read_text())["cameras"]
    assert [c["name"] for c in cameras] == ["a", "b", "c"]
    assert (cameras[2]["height"], cameras[2]["width"]) == shapes["c"]
    # Upstream mode always returns a camera (identity fallback when the fit fails).
    assert all(np.isfinite(c["extrinsics_c2w"]).all() for c in cameras)

    rows = [r.split() for r in (out / "trajectory.tum").read_text().splitlines()
            if not r.startswith("#")]
    assert len(rows) == 3 and all(len(r) == 8 for r in rows)
    trajectory = np.asarray(rows, dtype=np.float64)
    translations = [np.array(c["extrinsics_c2w"])[:3, 3] for c in cameras]
    np.testing.assert_allclose(trajectory[:, 1:4], translations, atol=1e-6)

    for kind in ("depth", "confidence"):
        for name, (h, w) in shapes.items():
            with Image.open(out / kind / f"{name}.png") as img:
                assert img.size == (w, h)


def test_failed_pose_fits_are_flagged_and_left_out(checkpoint, scene, tmp_path, capsys):
    # Random weights predict random rays: the fitter rejects them and says so.
    folder, _ = scene
    out = tmp_path / "out"
    images = [str(folder / "a.png"), str(folder / "b.png")]
    assert main([*images, "--checkpoint", str(checkpoint), "--out", str(out),
                 "--num-steps", "1", "--resolution", "network"]) == 0
    cameras = json.loads((out / "cameras.json").read_text())["cameras"]
    assert [c["name"] for c in cameras] == ["a", "b"]
    assert not any(c["pose_valid"] for c in cameras)
    assert "pose fit failed for 2 view(s) (a, b)" in capsys.readouterr().err
    body = [r for r in (out / "trajectory.tum").read_text().splitlines() if not r.startswith("#")]
    assert body == []
    assert _read_ply_count(out / "points.ply") == 0
    with np.load(out / "reconstruction.npz") as z:  # network resolution: the crops
        assert z["depth"].shape == (2, 84, 112) and z["valid"].all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing_dir"], "does not exist"),
        (["{scene}", "--checkpoint", "{tmp}/nothing_here"], "neither an existing file"),
        (["{scene}", "--checkpoint", "{tmp}", "--num-steps", "1"], "no model.safetensors"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, scene, tmp_path, capsys):
    folder, _ = scene
    argv = [a.format(scene=folder, tmp=tmp_path) for a in args]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "dvlt-reconstruct: error:" in err and message in err


def test_export_backends_need_an_export_folder(scene, tmp_path, capsys):
    folder, _ = scene
    assert main([str(folder), "--backend", "onnxruntime", "--out", str(tmp_path / "o")]) == 2
    assert "pass --checkpoint <folder written by dvlt-export>" in capsys.readouterr().err


def test_view_names_are_made_unique_without_new_collisions():
    assert _unique(["a", "a", "a_1", "b", "a"]) == ["a", "a_2", "a_1", "b", "a_3"]


def test_bad_threshold_is_a_usage_error(scene, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(scene[0]), "--conf-threshold", "150%"])
    assert info.value.code == 2
    assert "must be in [0, 100)" in capsys.readouterr().err


def test_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "dvlt_core.cli.reconstruct", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0 and "--num-steps" in result.stdout
