"""The viewer exports read back by their reference readers: ``scene.glb`` by trimesh and
``recording.rrd`` by rerun's own RRD reader, for a synthetic scene reconstructed through
the real pipeline by the ground-truth backend, and from ``dvlt-reconstruct --glb --rrd``."""

from __future__ import annotations

import dataclasses
import json
import struct
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.cli.reconstruct import build_parser, main, write_outputs
from dvlt_core.inference import Reconstructor
from dvlt_core.synthetic import default_rig
from dvlt_core.viewer_exports.glb import FRUSTUM_FRACTION, OPENCV_TO_GLTF, scene_size, write_glb
from dvlt_core.viewer_exports.rrd import ARBITRARY_UNITS, METRIC_UNITS, write_rrd
from dvlt_core.viewer_exports.views import view_colors

trimesh = pytest.importorskip("trimesh", reason="the 'viewers' extra (trimesh) is not installed")
rr = pytest.importorskip("rerun", reason="the 'viewers' extra (rerun-sdk) is not installed")

THRESHOLD = "20%"
NAMES = [f"{cam}@{t}" for t in ("0.0", "0.5") for cam in ("front_left", "front_right", "left",
                                                          "right")]


@pytest.fixture(scope="module")
def metric_scene():
    """(reconstruction, metric) of two snapshots of the 4-camera rig, 8 views in metres."""
    rig = default_rig(96, 64)
    backend = GroundTruthBackend.for_rig(rig, [0.0, 0.5], img_size=112)
    views = rig.snapshot(0.0) + rig.snapshot(0.5)
    recon = Reconstructor(backend).reconstruct(
        [v.image for v in views], num_steps=1, names=NAMES, timestamps=[v.t for v in views]
    )
    assert all(v.pose_valid for v in recon.views)
    return recon, backend.metric


@pytest.fixture(scope="module")
def written(metric_scene, tmp_path_factory):
    """The outputs of the CLI's writer with both exports."""
    recon, metric = metric_scene
    out = tmp_path_factory.mktemp("exports")
    paths = write_outputs(recon, out, THRESHOLD, glb=True, rrd=True, metric=metric)
    return recon, paths


def _gltf(path, with_bin: bool = True) -> tuple[dict, bytes]:
    """The JSON and (``with_bin``) BIN chunks of a GLB file (glTF 2.0 binary container)."""
    data = path.read_bytes()
    magic, version, _ = struct.unpack("<4sII", data[:12])
    assert (magic, version) == (b"glTF", 2)
    length, kind = struct.unpack("<I4s", data[12:20])
    assert kind == b"JSON"
    if not with_bin:
        assert len(data) == 20 + length
        return json.loads(data[20 : 20 + length]), b""
    bin_length, bin_kind = struct.unpack("<I4s", data[20 + length : 28 + length])
    assert bin_kind == b"BIN\0"
    return json.loads(data[20 : 20 + length]), data[28 + length : 28 + length + bin_length]


def _rgba_accessor(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    """(n, 4) uint8 values of a VEC4 unsigned-byte accessor (trimesh writes them packed)."""
    accessor = gltf["accessors"][index]
    assert (accessor["type"], accessor["componentType"]) == ("VEC4", 5121)
    view = gltf["bufferViews"][accessor["bufferView"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    count = accessor["count"]
    return np.frombuffer(blob, np.uint8, 4 * count, start).reshape(count, 4)


def test_glb_holds_the_ply_cloud_and_one_coloured_frustum_per_view(written):
    recon, paths = written
    points, colors = recon.point_cloud(THRESHOLD)
    assert len(points) > 1000
    scene = trimesh.load(paths["glb"], force="scene")
    cloud = scene.geometry["points"]
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == len(points)
    # float32 storage of float32 points, turned 180 degrees about x: exact.
    np.testing.assert_array_equal(cloud.vertices, points @ OPENCV_TO_GLTF)
    np.testing.assert_array_equal(cloud.colors[:, :3], colors)
    frusta = {n: g for n, g in scene.geometry.items() if n.startswith("frustum_")}
    assert sorted(frusta) == sorted(f"frustum_{n}" for n in NAMES)

    centres = recon.extrinsics_c2w[:, :3, 3]
    depth = FRUSTUM_FRACTION * scene_size(points, centres)
    for view in recon.views:
        lines = frusta[f"frustum_{view.name}"]
        assert isinstance(lines, trimesh.path.Path3D) and len(lines.vertices) == 16  # 8 segments
        apex = view.extrinsics_c2w[:3, 3] @ OPENCV_TO_GLTF
        # Segments 0-3 start at the apex; their far ends lie at the frustum's depth.
        ends = lines.vertices.reshape(8, 2, 3)
        np.testing.assert_allclose(ends[:4, 0], np.tile(apex, (4, 1)), atol=1e-6)
        far = (ends[:4, 1] @ OPENCV_TO_GLTF - view.extrinsics_c2w[:3, 3]) @ view.extrinsics_c2w[
            :3, :3
        ]
        np.testing.assert_allclose(far[:, 2], depth, rtol=1e-5)
    # View 0 is the world frame: in glTF it looks along -z, with image-up along +y.
    first = frusta[f"frustum_{NAMES[0]}"].vertices.reshape(8, 2, 3)[:4, 1]
    assert (first[:, 2] < 0).all()
    top = first[:2, 1].mean()  # corners 1, 2 are the image's top edge
    assert top > first[2:, 1].mean()

    # Colours: trimesh reads lines back without them, so check the glTF itself.
    gltf, blob = _gltf(paths["glb"])
    assert "y up" in gltf["scenes"][0]["extras"]["axes"]
    assert gltf["scenes"][0]["extras"]["units"] == "metres"  # the ground truth is metric
    palette = view_colors(len(NAMES))
    meshes = {m["name"]: m["primitives"][0] for m in gltf["meshes"]}
    assert meshes["points"]["mode"] == 0 and "COLOR_0" in meshes["points"]["attributes"]
    for i, name in enumerate(NAMES):
        primitive = meshes[f"frustum_{name}"]
        assert primitive["mode"] == 1
        rgba = _rgba_accessor(gltf, blob, primitive["attributes"]["COLOR_0"])
        assert len(rgba) == 16 and (rgba == [*palette[i], 255]).all()
    assert len({tuple(c) for c in palette}) == len(NAMES)


def _chunks(path) -> dict[str, list]:
    by_entity: dict[str, list] = {}
    for chunk in rr.chunk.RrdReader(path).stream():
        by_entity.setdefault(chunk.entity_path, []).append(chunk.to_record_batch())
    return by_entity


def _column(batches, name):
    """The values of column ``name`` over the entity's chunks that have it."""
    return [v for b in batches if name in b.schema.names for v in b.column(name).to_pylist()]


def test_rrd_reads_back_with_every_view(written):
    recon, paths = written
    points, colors = recon.point_cloud(THRESHOLD)
    chunks = _chunks(paths["rrd"])
    assert _column(chunks["/world"], "ViewCoordinates:xyz") == [[[3, 2, 5]]]  # R, D, F
    assert _column(chunks["/world/units"], "TextDocument:text") == [[METRIC_UNITS]]
    (positions,) = _column(chunks["/world/points"], "Points3D:positions")
    np.testing.assert_array_equal(np.array(positions, np.float32), points)
    (rgba,) = _column(chunks["/world/points"], "Points3D:colors")  # packed 0xRRGGBBAA
    c = colors.astype(np.uint32)
    np.testing.assert_array_equal(rgba, (c[:, 0] << 24) | (c[:, 1] << 16) | (c[:, 2] << 8) | 255)

    for index, view in enumerate(recon.views):
        camera = f"/world/cameras/{rr.escape_entity_path_part(view.name)}"
        h, w = view.depth.shape
        # Pose and pinhole, each logged at the view's index and timestamp.
        assert _column(chunks[camera], "view") == [index, index]
        assert _column(chunks[camera], "stamp") == [timedelta(seconds=view.timestamp)] * 2
        (translation,) = _column(chunks[camera], "Transform3D:translation")
        np.testing.assert_allclose(translation[0], view.extrinsics_c2w[:3, 3], atol=1e-6)
        (rotation,) = _column(chunks[camera], "Transform3D:mat3x3")  # column-major
        np.testing.assert_allclose(
            np.reshape(rotation[0], (3, 3)).T, view.extrinsics_c2w[:3, :3], atol=1e-6
        )
        (k,) = _column(chunks[camera], "Pinhole:image_from_camera")
        np.testing.assert_allclose(np.reshape(k[0], (3, 3)).T, view.intrinsics, rtol=1e-6)
        assert _column(chunks[camera], "Pinhole:resolution") == [[[w, h]]]
        assert _column(chunks[camera], "Pinhole:camera_xyz") == [[[3, 2, 5]]]
        for child, archetype in (("image", "Image"), ("depth", "DepthImage"),
                                 ("confidence", "Image")):
            ((size,),) = _column(chunks[f"{camera}/{child}"], f"{archetype}:format")
            assert (size["width"], size["height"]) == (w, h)
        assert _column(chunks[f"{camera}/depth"], "DepthImage:meter") == [[1.0]]
        ((depth_bytes,),) = _column(chunks[f"{camera}/depth"], "DepthImage:buffer")
        depth = np.frombuffer(bytes(depth_bytes), np.float32).reshape(h, w)
        np.testing.assert_array_equal(depth, np.where(view.valid, view.depth, 0))

    # The trajectory grows by one camera centre per view.
    strips = _column(chunks["/world/trajectory"], "LineStrips3D:strips")
    assert [len(s[0]) for s in strips] == list(range(1, len(NAMES) + 1))
    np.testing.assert_allclose(strips[-1][0], recon.extrinsics_c2w[:, :3, 3], atol=1e-6)
    assert not list(paths["rrd"].parent.glob(".*.part"))  # atomic: no temporary left


def test_rrd_of_an_up_to_scale_reconstruction_states_its_unit(metric_scene, tmp_path):
    recon, _ = metric_scene
    points, colors = recon.point_cloud(THRESHOLD)
    write_rrd(tmp_path / "recording.rrd", recon, points, colors, metric=False)
    chunks = _chunks(tmp_path / "recording.rrd")
    assert _column(chunks["/world/units"], "TextDocument:text") == [[ARBITRARY_UNITS]]
    depth_chunks = [c for e, c in chunks.items() if e.endswith("/depth")]
    assert len(depth_chunks) == len(NAMES)
    for batches in depth_chunks:
        assert all("DepthImage:meter" not in b.schema.names for b in batches)


def test_failed_views_are_left_out_unless_kept(metric_scene, tmp_path):
    recon, metric = metric_scene
    views = list(recon.views)
    views[1] = dataclasses.replace(views[1], pose_valid=False)
    failed = dataclasses.replace(recon, views=views)
    for keep in (False, True):
        points, colors = failed.point_cloud(THRESHOLD, include_failed=keep)
        write_glb(tmp_path / "scene.glb", failed, points, colors, include_failed=keep)
        write_rrd(tmp_path / "recording.rrd", failed, points, colors, keep, metric)
        scene = trimesh.load(tmp_path / "scene.glb", force="scene")
        frusta = [n for n in scene.geometry if n.startswith("frustum_")]
        cameras = [e for e in _chunks(tmp_path / "recording.rrd")
                   if e.startswith("/world/cameras/") and e.count("/") == 3]
        expected = len(NAMES) if keep else len(NAMES) - 1
        assert len(frusta) == len(cameras) == expected
        assert (f"frustum_{NAMES[1]}" in frusta) == keep
        assert len(scene.geometry["points"].vertices) == len(points)


def test_nothing_to_draw_still_writes_readable_files(metric_scene, tmp_path):
    recon, metric = metric_scene
    failed = dataclasses.replace(
        recon, views=[dataclasses.replace(v, pose_valid=False) for v in recon.views]
    )
    points, colors = failed.point_cloud(THRESHOLD)
    assert len(points) == 0
    write_glb(tmp_path / "scene.glb", failed, points, colors)
    assert not trimesh.load(tmp_path / "scene.glb", force="scene").geometry
    gltf, _ = _gltf(tmp_path / "scene.glb", with_bin=False)
    assert gltf["scenes"][0]["nodes"] == [] and "y up" in gltf["scenes"][0]["extras"]["axes"]
    write_rrd(tmp_path / "recording.rrd", failed, points, colors, metric=metric)
    chunks = _chunks(tmp_path / "recording.rrd")
    assert not [e for e in chunks if e.startswith("/world/cameras")]
    assert _column(chunks["/world/points"], "Points3D:positions") in ([], [[]])


def test_cli_flags_write_both_exports(saved, tmp_path, capsys):
    _, checkpoint = saved
    rng = np.random.default_rng(0)
    images = []
    for name in ("a", "b"):
        images.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(images[-1])
    out = tmp_path / "out"
    # Random weights: the upstream fitter's fallback cameras, kept to be drawn.
    code = main([*map(str, images), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--num-steps", "1", "--device", "cpu", "--pose-mode", "upstream",
                 "--keep-failed-views", "--glb", "--rrd"])
    assert code == 0, capsys.readouterr().err
    scene = trimesh.load(out / "scene.glb", force="scene")
    assert "up to scale" in _gltf(out / "scene.glb")[0]["scenes"][0]["extras"]["units"]
    assert sorted(n for n in scene.geometry if n.startswith("frustum_")) == [
        "frustum_a", "frustum_b"]
    chunks = _chunks(out / "recording.rrd")
    assert {"/world/cameras/a/depth", "/world/cameras/b/depth"} <= set(chunks)
    # DVLT is up to scale: no metre unit on its depth.
    assert _column(chunks["/world/units"], "TextDocument:text") == [[ARBITRARY_UNITS]]
    # Off by default.
    assert main([*map(str, images), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "plain"), "--num-steps", "1", "--device", "cpu"]) == 0
    assert not (tmp_path / "plain" / "scene.glb").exists()
    assert not (tmp_path / "plain" / "recording.rrd").exists()
    help_text = build_parser().format_help()
    assert "--glb" in help_text and "--rrd" in help_text and "rerun recording.rrd" in help_text
