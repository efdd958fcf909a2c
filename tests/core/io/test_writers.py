"""Output files: the PLY re-reads, the TUM file parses, PNGs decode, NPZ/JSON hold cameras."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dvlt_core.geometry.transforms import quaternion_to_rotation
from dvlt_core.io.view_transforms import ViewTransform
from dvlt_core.io.writers import (
    colorize,
    write_confidence_preview,
    write_depth_preview,
    write_ply,
    write_tum,
)
from dvlt_core.result import Reconstruction, ViewReconstruction
from dvlt_core.result_writers import write_cameras_json, write_npz


def read_ply(path):
    """Minimal reader for the binary PLY that write_ply produces."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    props = [line.split()[1:] for line in header if line.startswith("property")]
    kinds = {"float": "<f4", "uchar": "u1"}
    dtype = np.dtype([(name, kinds[kind]) for kind, name in props])
    return np.frombuffer(data[end:], dtype=dtype, count=count), len(data) - end - count * 15


def _view(i, shape, pose_valid=True):
    h, w = shape
    rng = np.random.default_rng(i)
    c2w = np.eye(4)
    angle = 0.3 * (i + 1)
    c2w[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    c2w[:3, 3] = [i, 2.0 * i, -1.0]
    if not pose_valid:
        c2w[:] = np.nan
    return ViewReconstruction(
        name=f"v{i}",
        timestamp=0.5 * i,
        image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        depth=rng.uniform(1, 5, shape).astype(np.float32),
        confidence=rng.uniform(1, 10, shape).astype(np.float32),
        valid=np.ones(shape, bool),
        world_points=rng.normal(size=(h, w, 3)).astype(np.float32),
        intrinsics=np.array([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]),
        extrinsics_c2w=c2w,
        pose_valid=pose_valid,
        transform=ViewTransform((h, w), 0, (h, w), (0, 0), (h, w), (0, 0), (h, w)),
    )


def _recon(shapes, invalid=()):
    views = [_view(i, s, pose_valid=i not in invalid) for i, s in enumerate(shapes)]
    return Reconstruction(views, "original", 4, "robust", np.zeros((len(shapes), 9)))


def test_ply_round_trip(tmp_path):
    points = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    colors = np.random.default_rng(1).integers(0, 256, (1000, 3), dtype=np.uint8)
    write_ply(tmp_path / "p.ply", points, colors)
    vertices, trailing = read_ply(tmp_path / "p.ply")
    assert trailing == 0
    np.testing.assert_array_equal(np.stack([vertices[a] for a in "xyz"], -1), points)
    np.testing.assert_array_equal(
        np.stack([vertices[c] for c in ("red", "green", "blue")], -1), colors
    )
    write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3)))
    assert len(read_ply(tmp_path / "empty.ply")[0]) == 0


def test_tum_parses_and_matches_poses(tmp_path):
    recon = _recon([(8, 10)] * 4, invalid=(1,))
    flags = [True, True, True, False]  # view 1 is NaN, view 3 flagged invalid
    write_tum(tmp_path / "t.tum", [v.timestamp for v in recon.views], recon.extrinsics_c2w, flags)
    rows = [line.split() for line in (tmp_path / "t.tum").read_text().splitlines()
            if not line.startswith("#")]
    assert [len(r) for r in rows] == [8, 8]
    values = np.array(rows, dtype=np.float64)
    np.testing.assert_allclose(values[:, 0], [0.0, 1.0])
    for row, view in zip(values, [recon.views[0], recon.views[2]], strict=True):
        np.testing.assert_allclose(row[1:4], view.extrinsics_c2w[:3, 3], atol=1e-8)
        q = row[4:]
        assert abs(np.linalg.norm(q) - 1) < 1e-8
        np.testing.assert_allclose(quaternion_to_rotation(q), view.extrinsics_c2w[:3, :3],
                                   atol=1e-7)


def test_previews_decode_with_the_map_size(tmp_path):
    view = _view(0, (12, 17))
    view.valid[:3] = False
    write_depth_preview(tmp_path / "d.png", view.depth, view.valid)
    write_confidence_preview(tmp_path / "c.png", view.confidence, view.valid)
    for name in ("d.png", "c.png"):
        with Image.open(tmp_path / name) as img:
            assert img.mode == "RGB" and img.size == (17, 12)
            array = np.asarray(img)
        assert (array[:3] == 0).all() and array[3:].any()


def test_colorize_is_monotone_in_brightness():
    ramp = np.linspace(0, 1, 64)[None]
    rgb = colorize(ramp).astype(float)[0]
    luminance = rgb @ [0.2126, 0.7152, 0.0722]
    assert (np.diff(luminance) >= -1e-9).all() and luminance[-1] > 4 * luminance[0]
    assert (colorize(np.full((2, 2), np.nan)) == 0).all()


def test_npz_and_json_hold_every_view(tmp_path):
    recon = _recon([(8, 10), (8, 10)])
    write_npz(tmp_path / "r.npz", recon)
    with np.load(tmp_path / "r.npz") as z:
        assert z["depth"].shape == (2, 8, 10) and z["world_points"].shape == (2, 8, 10, 3)
        assert list(z["names"]) == ["v0", "v1"]
        np.testing.assert_array_equal(z["extrinsics_c2w"], recon.extrinsics_c2w)
        assert json.loads(str(z["cameras_json"]))["num_steps"] == 4
    mixed = _recon([(8, 10), (10, 8)], invalid=(1,))
    write_npz(tmp_path / "m.npz", mixed)
    with np.load(tmp_path / "m.npz") as z:
        assert z["depth_0"].shape == (8, 10) and z["depth_1"].shape == (10, 8)
    write_cameras_json(tmp_path / "c.json", mixed)
    text = (tmp_path / "c.json").read_text()
    cams = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))["cameras"]
    assert cams[0]["pose_valid"] and cams[0]["width"] == 10 and cams[1]["height"] == 10
    assert cams[1]["extrinsics_c2w"] is None and not cams[1]["pose_valid"]
    assert cams[0]["preprocessing"]["original_hw"] == [8, 10]
