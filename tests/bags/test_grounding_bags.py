"""Grounding from a bag: ``dvlt-ros sample-bag`` records what a robot publishes (/tf_static,
/tf, depth), and ``dvlt-ros process`` turns it into metric outputs in ``odom``.

Real bag files (our writer), the real session, the ``ground_truth_unscaled`` backend (a
random scale per window, σ_p = 2 mm of noise per axis on each camera centre, 1 % depth
noise). Tolerances, as in tests/pipeline/test_grounding.py: a distance between two centres
is off by √2·σ_p along it, so a scale constraint of length L is off by √2·σ_p / L relatively
and 3√2·σ_p / L bounds a window's scale error (L = 0.25 m between the cameras, 0.12 m of
motion between the snapshots at 2.5 Hz); the depth ratio is a median over thousands of
pixels with 1 % noise each (3 % bounds it). A placed camera centre is off by its own noise
(3σ_p per axis, 3√3·σ_p in norm) plus the scale error times the lever arm of the cameras
about the anchored centroid (< 0.3 m).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from bag_helpers import make_sample, process, rewrite_bag
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from dvlt_ros.bags.evaluation import read_tum
from dvlt_ros.bags.issues import IssueLog
from dvlt_ros.bags.sample import (
    DEPTH_IMAGE,
    DEPTH_INFO,
    TF_DELAY_NS,
    SampleBagConfig,
    depth_millimetres,
)
from dvlt_ros.bags.source import BagMessage, BagSource
from dvlt_ros.bags.tf_feed import LOOKAHEAD_NS, BagTransforms
from dvlt_ros.cli import process as process_cli
from dvlt_ros.cli import sample_bag as sample_bag_cli
from dvlt_ros.conversions.image import image_to_array
from dvlt_ros.conversions.tf import (
    matrix_from_transform,
    ns_from_stamp,
    stamp_from_ns,
    transform_stamped,
)

CAMERAS = ("cam_front_left", "cam_front_right")
FRAMES, RATE = 6, 2.5
CONFIG = SampleBagConfig(frames=FRAMES, rate_hz=RATE, num_cameras=2, depth=True)
POSITION_NOISE = 0.002
BASELINE, MOTION, LEVER = 0.25, 0.12, 0.3
SCALE_TOLERANCE = {
    "rig": 3 * math.sqrt(2) * POSITION_NOISE / BASELINE,
    "odometry": 3 * math.sqrt(2) * POSITION_NOISE / MOTION,
    "depth": 0.03,
}
ANCHORED = {"anchor": "tf", "world_frame": "odom"}


def placement_tolerance(source: str) -> float:
    return 3 * math.sqrt(3) * POSITION_NOISE + SCALE_TOLERANCE[source] * LEVER


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("grounded") / "bag", frames=FRAMES,
                       rate_hz=RATE, depth=True)


def drop(topics, after_ns=None):
    """A rewrite that drops ``topics`` (from log time ``after_ns`` on, when given)."""
    def transform(messages: list[BagMessage]):
        return [m for m in messages if m.topic not in topics
                or (after_ns is not None and m.log_ns < after_ns)]
    return transform


# ---------------------------------------------------------------------- sample-bag
def test_sample_bag_records_what_a_robot_publishes(bag):
    rig = CONFIG.rig()
    with BagSource(bag) as source:
        topics = source.topics
        assert topics["/tf_static"].durability == "transient_local"
        assert topics["/tf_static"].count == 1
        assert topics["/tf"].count == FRAMES and topics["/tf"].durability == "volatile"
        (static,) = [deserialize_message(m.raw, TFMessage)
                     for m in source.messages(["/tf_static"])]
        mounts = {t.child_frame_id: (t.header.frame_id, matrix_from_transform(t))
                  for t in static.transforms}
        for name in CAMERAS:
            parent, pose = mounts[rig.camera(name).optical_frame]
            assert parent == "base_link"
            np.testing.assert_allclose(pose, rig.camera(name).base_from_camera, atol=1e-12)
        for index, message in enumerate(source.messages(["/tf"])):
            (tf,) = deserialize_message(message.raw, TFMessage).transforms
            stamp = ns_from_stamp(tf.header.stamp)
            assert (tf.header.frame_id, tf.child_frame_id) == ("odom", "base_link")
            assert stamp == CONFIG.stamp_ns(index)
            assert message.log_ns == stamp + TF_DELAY_NS  # after the images, as on a robot
            np.testing.assert_allclose(matrix_from_transform(tf),
                                       rig.world_from_base(CONFIG.time_s(index)), atol=1e-9)
        name = CAMERAS[1]
        depth_topic, info_topic = f"/{name}/{DEPTH_IMAGE}", f"/{name}/{DEPTH_INFO}"
        depth = deserialize_message(next(source.messages([depth_topic])).raw, Image)
        info = deserialize_message(next(source.messages([info_topic])).raw, CameraInfo)
    assert depth.encoding == "16UC1"
    assert depth.header.frame_id == info.header.frame_id == rig.camera(name).optical_frame
    assert ns_from_stamp(depth.header.stamp) == CONFIG.stamp_ns(0)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), rig.camera(name).k)
    truth = rig.render(name, 0.0).depth
    np.testing.assert_array_equal(image_to_array(depth), depth_millimetres(truth))
    assert np.abs(image_to_array(depth) * 1e-3 - truth).max() <= 0.0005 + 1e-9


def test_depth_millimetres_marks_missing_and_out_of_range_as_zero():
    metres = np.array([[0.0, np.nan, np.inf, -1.0], [1.2344, 1.2346, 65.535, 70.0]])
    assert depth_millimetres(metres).tolist() == [[0, 0, 0, 0], [1234, 1235, 65535, 0]]


def test_loop_path_closes_the_circle(tmp_path):
    config = SampleBagConfig(frames=8, path="loop")
    rig = config.rig()
    start, last = rig.world_from_base(0.0), rig.world_from_base(config.time_s(7))
    after = rig.world_from_base(config.time_s(8))  # one step past the end: the start
    np.testing.assert_allclose(after, start, atol=1e-9)
    step = np.linalg.norm(rig.world_from_base(config.time_s(1))[:3, 3] - start[:3, 3])
    assert np.linalg.norm(last[:3, 3] - start[:3, 3]) == pytest.approx(step, rel=1e-9)
    with pytest.raises(ValueError, match="path must be one of"):
        SampleBagConfig(path="square")
    out = tmp_path / "loop"
    assert sample_bag_cli.main([str(out), "--frames", "2", "--path", "loop", "--depth",
                                "--width", "64", "--height", "48"]) == 0
    with BagSource(out) as source:
        assert {"/tf", "/cam_front_left/depth/image_raw"} <= set(source.topics)


# ---------------------------------------------------------------------- process
@pytest.mark.parametrize("source", ["rig", "odometry", "depth"])
def test_process_recovers_metric_scale_and_odom_placement(bag, tmp_path, source):
    out = tmp_path / "out"
    summary, issues = process(bag, out, unscaled=True, scale_source=source, **ANCHORED)
    assert summary["complete"] and summary["windows"] == FRAMES and not issues.issues
    events = summary["events"]
    assert "tf_unavailable" not in events and "scale_unavailable" not in events
    grounding = summary["grounding"]
    assert grounding["anchors"] == {"tf": FRAMES}
    # Odometry needs two snapshots: the first window is placed by a Sim(3) TF fit.
    assert grounding["sources"] == ({"tf": 1, "odometry": FRAMES - 1}
                                    if source == "odometry" else {source: FRAMES})

    # Metric: the two cameras' reconstructed centres are the rig's baseline apart.
    (stamps, left), (_, right) = (read_tum(out / f"trajectory_{c}.tum") for c in CAMERAS)
    assert len(stamps) == FRAMES
    baselines = np.linalg.norm(left[:, :3, 3] - right[:, :3, 3], axis=1)
    tolerance = SCALE_TOLERANCE[source] + 3 * math.sqrt(2) * POSITION_NOISE / BASELINE
    np.testing.assert_allclose(baselines, BASELINE, rtol=tolerance)

    # Placed in odom: the reference camera where its true pose is, with no alignment.
    truth_stamps, truth = read_tum(out / "ground_truth.tum")
    np.testing.assert_array_equal(truth_stamps, stamps)
    rig = CONFIG.rig()
    for stamp, pose in zip(truth_stamps, truth, strict=True):
        t = (int(stamp) - CONFIG.start_ns) / 1e9
        np.testing.assert_allclose(pose, rig.camera_pose(CAMERAS[0], t), atol=1e-6)
    errors = np.linalg.norm(left[:, :3, 3] - truth[:, :3, 3], axis=1)
    assert errors.max() < placement_tolerance(source)
    (report,) = grounding["ground_truth"].values()
    assert report["frame"] == "odom" and report["poses"] == FRAMES
    assert report["unaligned_rmse"] < placement_tolerance(source)
    assert report["ate_se3_rmse"] <= report["unaligned_rmse"] + 1e-9
    centres = np.stack([rig.camera_pose(CAMERAS[0], CONFIG.time_s(i))[:3, 3]
                        for i in range(FRAMES)])
    path = np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()
    assert report["path_length_m"] == pytest.approx(path, rel=1e-9)


def test_chain_with_rig_scale_is_metric_in_its_own_frame(bag, tmp_path):
    out = tmp_path / "out"
    summary, _ = process(bag, out, unscaled=True, scale_source="rig")
    grounding = summary["grounding"]
    assert grounding["sources"] == {"rig": FRAMES} and grounding["anchors"] == {"chain": FRAMES}
    (report,) = grounding["ground_truth"].values()
    assert report["frame"].startswith("dvlt_world")
    # The chain drifts a little per window; its SE(3) ATE stays at the placement's level.
    assert report["ate_se3_rmse"] < FRAMES * placement_tolerance("rig")
    _, truth = read_tum(out / "ground_truth.tum")
    first = read_tum(out / f"trajectory_{CAMERAS[0]}.tum")[1][0]
    np.testing.assert_allclose(truth[0], first, atol=1e-6)  # the world's definition


def test_without_tf_static_rig_scale_is_refused_with_a_reason(bag, tmp_path):
    stripped = rewrite_bag(bag, tmp_path / "no_static", drop({"/tf_static"}))
    summary, issues = process(stripped, tmp_path / "out", unscaled=True, scale_source="rig")
    assert summary["complete"] and summary["windows"] == FRAMES
    assert "missing_tf" in issues.codes()
    grounding = summary["grounding"]
    assert grounding["metric_windows"] == 0 and grounding["metres_per_unit"] is None
    assert grounding["sources"] == {"none": FRAMES}
    assert "rig" in grounding["unscaled_reason"]
    assert summary["events"]["scale_unavailable"] == FRAMES
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["grounding"]["unscaled_reason"] == grounding["unscaled_reason"]


def test_tf_that_ends_early_is_a_stale_warning_not_a_crash(bag, tmp_path):
    cut = CONFIG.stamp_ns(2) + TF_DELAY_NS + 1  # /tf up to the third snapshot only
    stale = rewrite_bag(bag, tmp_path / "stale", drop({"/tf"}, after_ns=cut))
    summary, issues = process(stale, tmp_path / "out", unscaled=True, scale_source="odometry",
                              **ANCHORED)
    assert summary["error"] is None and summary["windows"] == FRAMES
    assert issues.counts["tf_stale"] == 1
    assert "'base_link'" in next(i.message for i in issues.issues if i.code == "tf_stale")
    assert summary["issue_counts"]["tf_stale"] == 1
    assert summary["events"]["tf_unavailable"] >= FRAMES - 3
    grounding = summary["grounding"]
    # Anchored while a view of the window has TF (window_timesteps 2: the fourth window
    # holds the third snapshot), then held on the last alignment.
    assert grounding["anchors"] == {"tf": 4, "tf_held": FRAMES - 4}


def test_late_tf_and_depth_are_waited_for_within_the_look_ahead(bag, tmp_path):
    """TF and depth logged up to 0.3 s after their images: every window still finds
    them (no extrapolation); the wait is bounded by LOOKAHEAD_NS."""
    late = LOOKAHEAD_NS * 3 // 5

    def delay(messages):
        moved = [BagMessage(m.topic, m.msgtype, m.log_ns + late, m.raw)
                 if m.topic == "/tf" or "/depth/" in m.topic else m for m in messages]
        return sorted(moved, key=lambda m: m.log_ns)

    delayed = rewrite_bag(bag, tmp_path / "late", delay)
    summary, issues = process(delayed, tmp_path / "out", unscaled=True, scale_source="auto",
                              **ANCHORED)
    assert summary["complete"] and summary["windows"] == FRAMES and not issues.issues
    assert "tf_unavailable" not in summary["events"]
    assert summary["grounding"]["anchors"] == {"tf": FRAMES}


def test_cli_grounding_options_and_refusals(bag, tmp_path, capsys):
    cheap = ["--backend", "ground_truth_unscaled", "--quiet", "-p", "img_size:=112",
             "-p", "num_steps:=2", "-p", "window_timesteps:=2", "-p", "keyframe_min_spacing:=0.0"]
    out = tmp_path / "out"
    assert process_cli.main([str(bag), "--out", str(out), *cheap, "--scale-source", "auto",
                             "--anchor", "tf", "--world-frame", "odom"]) == 0
    err = capsys.readouterr().err
    assert f"grounding: scale_source auto, anchor tf: {FRAMES} of {FRAMES} windows metric" in err
    assert "ground_truth.tum (odom): reference camera ATE" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["scale_source"] == "auto"
    assert summary["files"]["ground_truth"] == {"ground_truth.tum": FRAMES}

    assert process_cli.main([str(bag), "--out", str(tmp_path / "refused"), *cheap,
                             "--anchor", "tf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "anchor tf needs world_frame" in err[0]
    assert "Traceback" not in err[0]


def test_depth_in_its_own_frame_is_reprojected_with_its_camera_info_and_tf(bag, tmp_path):
    """A depth camera with its own optical frame (here mounted where the colour camera is,
    linked by /tf_static): its images are reprojected through its CameraInfo and that TF,
    and give the same metric scale."""
    rig = CONFIG.rig()

    def own_frame(messages):
        for m in messages:
            if "/depth/" in m.topic:
                cls = Image if m.topic.endswith("image_raw") else CameraInfo
                msg = deserialize_message(m.raw, cls)
                msg.header.frame_id += "_depth"
                m = replace(m, raw=serialize_message(msg))
            elif m.topic == "/tf_static":
                static = deserialize_message(m.raw, TFMessage)
                static.transforms += [transform_stamped(
                    np.eye(4), rig.camera(c).optical_frame, rig.camera(c).optical_frame
                    + "_depth", stamp_from_ns(m.log_ns)) for c in CAMERAS]
                m = replace(m, raw=serialize_message(static))
            yield m

    moved = rewrite_bag(bag, tmp_path / "depth_frame", own_frame)
    summary, issues = process(moved, tmp_path / "out", unscaled=True, scale_source="depth",
                              **ANCHORED)
    assert summary["complete"] and not issues.issues
    assert summary["grounding"]["sources"] == {"depth": FRAMES}
    (report,) = summary["grounding"]["ground_truth"].values()
    assert report["unaligned_rmse"] < placement_tolerance("depth")


def test_bag_transforms_wait_for_lagging_edges_and_restart_after_a_jump_back():
    issues = IssueLog()
    tf = BagTransforms(issues, cache_time_s=1.0)

    def add(parent, child, stamp_ns):
        msg = TFMessage(transforms=[transform_stamped(np.eye(4), parent, child,
                                                      stamp_from_ns(stamp_ns))])
        tf.add(serialize_message(msg), False, "/tf", stamp_ns)

    assert not tf.has_dynamic and tf.lag(10) == []
    add("odom", "base_link", 100)
    add("map", "odom", 50)
    assert tf.lag(80) == ["odom"] and tf.lag(40) == []
    tf.warn_stale(80, 200)
    tf.warn_stale(90, 300)  # once per edge
    assert issues.counts["tf_stale"] == 1
    add("odom", "base_link", 100 + 2 * 10**9)
    add("odom", "base_link", 100)  # 2 s back, beyond the 1 s history: a new timeline
    assert issues.counts["tf_time_jump"] == 1
    assert tf.lag(100) == [] and tf.lag(101) == ["base_link"]
    np.testing.assert_allclose(tf.tree.lookup("odom", "base_link", 100), np.eye(4))
