"""``dvlt-ros process --glb --rrd`` on a sample bag (ground-truth backend): ``scene.glb`` loads
in trimesh with the fused cloud of ``cloud.ply`` and a frustum at every pose of the TUM
trajectories, and ``recording.rrd`` reads back with rerun's own reader, the cameras moving
along those trajectories over time."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from bag_helpers import IMG_SIZE, SAMPLE, make_sample, parameters, process, rewrite_bag

from dvlt_core.viewer_exports.glb import OPENCV_TO_GLTF
from dvlt_core.viewer_exports.rrd import METRIC_UNITS
from dvlt_ros.bags.evaluation import read_tum
from dvlt_ros.bags.processor import BagProcessor, ProcessOptions
from dvlt_ros.bags.sample import ground_truth_backend
from dvlt_ros.bags.source import BagSource
from dvlt_ros.cli import process as process_cli

trimesh = pytest.importorskip("trimesh", reason="the 'viewers' extra (trimesh) is not installed")
rr = pytest.importorskip("rerun", reason="the 'viewers' extra (rerun-sdk) is not installed")

CAMERAS = ("cam_front_left", "cam_front_right")
STAMPS = [SAMPLE.stamp_ns(i) for i in range(SAMPLE.frames)]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """The output folder of ``dvlt-ros process --glb --rrd`` and its summary."""
    root = tmp_path_factory.mktemp("viewers")
    bag = make_sample(root / "sample", "mcap")
    out = root / "out"
    assert process_cli.main([str(bag), "--out", str(out), "--backend", "ground_truth",
                             "--glb", "--rrd", "--quiet", "-p", "img_size:=112",
                             "-p", "num_steps:=2", "-p", "window_timesteps:=2",
                             "-p", "keyframe_min_spacing:=0.0"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def _trajectory(out, camera) -> tuple[np.ndarray, np.ndarray]:
    stamps, poses = read_tum(out / f"trajectory_{camera}.tum")
    assert np.allclose(stamps, STAMPS, atol=1000)
    return np.asarray(STAMPS), poses


def test_glb_holds_the_fused_cloud_and_a_frustum_per_reconstructed_view(processed):
    out, summary = processed
    assert summary["files"]["glb"] == ["scene.glb"] and summary["files"]["rrd"] == [
        "recording.rrd"]
    scene = trimesh.load(out / "scene.glb", force="scene")
    ply = trimesh.load(out / "cloud.ply")
    assert len(ply.vertices) == summary["files"]["clouds"]["cloud.ply"] > 1000
    np.testing.assert_allclose(scene.geometry["points"].vertices, ply.vertices @ OPENCV_TO_GLTF,
                               atol=1e-6)
    frusta = {n: g for n, g in scene.geometry.items() if n.startswith("frustum_")}
    assert len(frusta) == len(CAMERAS) * SAMPLE.frames
    for camera in CAMERAS:
        for stamp, pose in zip(*_trajectory(out, camera), strict=True):
            lines = frusta[f"frustum_{camera}@{stamp}"]
            apex = lines.vertices.reshape(8, 2, 3)[0, 0]
            # The TUM file rounds the pose; the apex is the camera centre.
            np.testing.assert_allclose(apex, pose[:3, 3] @ OPENCV_TO_GLTF, atol=1e-5)
    gltf_units = trimesh.load(out / "scene.glb", force="scene").metadata.get("units")
    assert gltf_units == "metres"  # the ground-truth backend is metric


def _chunks(path) -> dict[str, list]:
    by_entity: dict[str, list] = {}
    for chunk in rr.chunk.RrdReader(path).stream():
        by_entity.setdefault(chunk.entity_path, []).append(chunk.to_record_batch())
    return by_entity


def _column(batches, name):
    return [v for b in batches if name in b.schema.names for v in b.column(name).to_pylist()]


def test_rrd_reads_back_with_the_cameras_moving_over_the_windows(processed):
    out, _ = processed
    chunks = _chunks(out / "recording.rrd")
    assert _column(chunks["/world"], "ViewCoordinates:xyz") == [[[3, 2, 5]]]
    assert _column(chunks["/world/units"], "TextDocument:text") == [[METRIC_UNITS]]
    (positions,) = _column(chunks["/world/points"], "Points3D:positions")
    ply = trimesh.load(out / "cloud.ply")
    np.testing.assert_allclose(np.array(positions), ply.vertices, atol=1e-6)
    for camera in CAMERAS:
        entity = f"/world/cameras/{camera}"
        stamps, poses = _trajectory(out, camera)
        windows = _column(chunks[entity], "view")
        assert sorted(set(windows)) == list(range(SAMPLE.frames))  # one per window
        logged = {t for b in chunks[entity] if "stamp" in b.schema.names
                  for t in b.column("stamp").cast("int64").to_pylist()}
        assert sorted(logged) == list(stamps)  # the ROS stamps, exact to the nanosecond
        translations = _column(chunks[entity], "Transform3D:translation")
        assert len(translations) == SAMPLE.frames
        np.testing.assert_allclose(np.concatenate(translations), poses[:, :3, 3], atol=1e-5)
        ((size,), *_) = _column(chunks[f"{entity}/image"], "Image:format")
        assert (size["width"], size["height"]) == (SAMPLE.width, SAMPLE.height)
        assert _column(chunks[f"{entity}/depth"], "DepthImage:meter") == [[1.0]] * SAMPLE.frames
        strips = _column(chunks[f"/world/trajectory/{camera}"], "LineStrips3D:strips")
        assert [len(s[0]) for s in strips] == list(range(1, SAMPLE.frames + 1))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # staged, atomic


def test_without_the_flags_no_viewer_file_is_written(tmp_path):
    bag = make_sample(tmp_path / "sample", "mcap", frames=2)
    out = tmp_path / "out"
    assert process_cli.main([str(bag), "--out", str(out), "--backend", "ground_truth",
                             "--quiet", "-p", "img_size:=112", "-p", "window_timesteps:=1"]) == 0
    assert not list(out.glob("*.glb")) and not list(out.glob("*.rrd"))
    assert "glb" not in json.loads((out / "summary.json").read_text())["files"]


def test_each_world_epoch_gets_its_own_scene_and_recording(tmp_path):
    """A time jump starts a new world: its views and cloud go to ``.epoch1`` files, as the
    clouds and trajectories do, never into the first world's frame."""
    source = make_sample(tmp_path / "src", frames=4)
    shift = SAMPLE.stamp_ns(4) - SAMPLE.start_ns
    again = {SAMPLE.stamp_ns(i) for i in range(2)}

    def replay_later(messages):  # the first two snapshots again: the stamps jump back
        return [*messages, *(replace(m, log_ns=m.log_ns + shift) for m in messages
                             if m.log_ns in again and m.topic.startswith("/cam"))]

    bag = rewrite_bag(source, tmp_path / "jump", replay_later)
    out = tmp_path / "out"
    summary, _ = process(bag, out, ProcessOptions(glb=True, rrd=True), backend_from=source)
    assert summary["epochs"] == [0, 1]
    assert summary["files"]["glb"] == ["scene.glb", "scene.epoch1.glb"]
    assert summary["files"]["rrd"] == ["recording.rrd", "recording.epoch1.rrd"]
    for suffix, windows in (("", 4), (".epoch1", 2)):
        scene = trimesh.load(out / f"scene{suffix}.glb", force="scene")
        assert len([n for n in scene.geometry if n.startswith("frustum_")]) == 2 * windows
        ply = trimesh.load(out / f"cloud{suffix}.ply")
        assert len(scene.geometry["points"].vertices) == len(ply.vertices)
        chunks = _chunks(out / f"recording{suffix}.rrd")
        assert len(_column(chunks[f"/world/cameras/{CAMERAS[0]}"],
                           "Transform3D:translation")) == windows


class _AbortingBackend:
    """The ground-truth backend, interrupted (a second Ctrl-C) at its third inference."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0
        self.watch, self.seen = None, False  # a file that should exist when interrupted

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, images, num_steps=None):
        self.calls += 1
        if self.calls == 3:
            self.seen = self.watch.is_file()
            raise KeyboardInterrupt
        return self.inner.infer(images, num_steps)


def test_an_aborted_run_leaves_no_viewer_file_behind(tmp_path):
    """A second Ctrl-C aborts without output: the open recording is closed and nothing of
    the staged directory (scene, recording) stays."""
    bag_path = make_sample(tmp_path / "sample", "mcap")
    out = tmp_path / "out"
    with BagSource(bag_path) as bag:
        backend = _AbortingBackend(ground_truth_backend(bag, IMG_SIZE))
        processor = BagProcessor(bag, backend, parameters(bag), out,
                                 ProcessOptions(glb=True, rrd=True))
        backend.watch = recording = processor.output.path("recording.rrd")
        with pytest.raises(KeyboardInterrupt):
            processor.run()
    assert backend.calls == 3 and backend.seen  # the recording was being streamed
    assert not recording.exists()
    assert not out.exists() and not list(tmp_path.glob(".out*"))
