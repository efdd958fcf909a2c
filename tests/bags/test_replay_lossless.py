"""Live lossless replay (``BagPlayer`` + ``reconstruct_node`` with ``lossless:=true`` and
``use_sim_time:=true``, real DDS on loopback) against offline processing of the same bag:
nothing dropped, and the same clouds, depth, TF and trajectory (determinism: both drive
the one ReconstructionSession)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from bag_helpers import PARAMS, SAMPLE, make_sample, process
from nav_msgs.msg import Path
from ros_graph import Graph
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import UInt64
from tf2_msgs.msg import TFMessage

from dvlt_ros.bags.handshake import ACK_QOS
from dvlt_ros.bags.msgtypes import typestore
from dvlt_ros.bags.processor import ProcessOptions
from dvlt_ros.bags.sample import TF_DELAY_NS, camera_names, ground_truth_backend
from dvlt_ros.bags.source import BagSource
from dvlt_ros.conversions.image import image_to_array
from dvlt_ros.conversions.pointcloud import cloud_to_array

CAMERAS = camera_names(SAMPLE)
NODE = "/reconstruct_node"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("lossless") / "bag")


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _offline(bag, out):
    """Clouds (x, y, z, rgb bits) per stamp, depth per (frame, stamp), TF translation per
    (child, stamp) and the last trajectory (stamp, position) of an offline run."""
    summary, _ = process(bag, out, ProcessOptions(fuse_voxel=0.0))
    clouds, depths, translations, path = {}, {}, {}, []
    with AnyReader([out / "reconstruction"], default_typestore=typestore()) as reader:
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == f"{NODE}/points":
                clouds[log_ns] = np.frombuffer(msg.data, np.float32).reshape(-1, 5)[:, :4]
            elif conn.topic.endswith("/depth"):
                depths[(msg.header.frame_id, log_ns)] = np.frombuffer(
                    msg.data, np.float32).reshape(msg.height, msg.width)
            elif conn.topic == "/tf":
                for tf in msg.transforms:
                    t = tf.transform.translation
                    translations[(tf.child_frame_id, log_ns)] = np.array([t.x, t.y, t.z])
            elif conn.topic == f"{NODE}/trajectory":
                path = _path_points(msg)
    return summary, clouds, depths, translations, path


def _path_points(msg) -> list[tuple[int, np.ndarray]]:
    return [(_stamp(p.header), np.array([p.pose.position.x, p.pose.position.y,
                                         p.pose.position.z])) for p in msg.poses]


def test_lossless_replay_matches_offline_processing(bag, tmp_path):
    summary, clouds, depths, translations, path = _offline(bag, tmp_path / "offline")
    assert summary["windows"] == SAMPLE.frames

    graph = Graph()
    try:
        with BagSource(bag) as source:
            backend = ground_truth_backend(source, PARAMS["img_size"])
        node = graph.reconstruct_node(backend, cameras=CAMERAS, lossless=True,
                                      use_sim_time=True, input_qos="reliable", rate=0.5,
                                      **PARAMS)
        points = graph.listen(PointCloud2, f"{NODE}/points")
        tf = graph.listen(TFMessage, "/tf")
        trajectory = graph.listen(Path, f"{NODE}/trajectory")
        live_depths = [graph.listen(Image, f"{NODE}/{c}/depth") for c in CAMERAS]
        acks = graph.listen(UInt64, f"{NODE}/consumed", ACK_QOS)
        player = graph.player(BagSource(bag), rate=0.0, lossless=True)
        report = player.play()
        # Every image was acknowledged after its snapshot was published: nothing to wait for.
        assert report.acknowledged == len(CAMERAS) * SAMPLE.frames
        assert graph.spin_until(lambda: acks and acks[-1].data == report.acknowledged)
        assert len(points) == SAMPLE.frames
        assert graph.spin_until(lambda: trajectory and len(trajectory[-1].poses) == SAMPLE.frames)
        assert node.last_report.drops == 0 and node.last_report.cycle == SAMPLE.frames
        # Sim time: the node's clock is the bag's, at its last message (the odometry,
        # logged TF_DELAY_NS after the last images).
        last_ns = SAMPLE.stamp_ns(SAMPLE.frames - 1) + TF_DELAY_NS
        assert graph.spin_until(lambda: node.get_clock().now().nanoseconds == last_ns)
    finally:
        graph.close()

    live_clouds = {_stamp(m.header): cloud_to_array(m) for m in points}
    assert sorted(live_clouds) == sorted(clouds)
    for stamp, cloud in live_clouds.items():
        xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], -1)
        assert np.allclose(xyz, clouds[stamp][:, :3], atol=1e-6)
        assert np.array_equal(cloud["rgb"].view(np.uint32), clouds[stamp][:, 3].view(np.uint32))
    for messages in live_depths:
        assert len(messages) == SAMPLE.frames
        for msg in messages:
            offline = depths[(msg.header.frame_id, _stamp(msg.header))]
            assert np.allclose(image_to_array(msg), offline, atol=1e-6, equal_nan=True)
    # The node's camera frames (the bag's own odom -> base_link is replayed on /tf too).
    live_tf = {(t.child_frame_id, _stamp(t.header)): t.transform.translation
               for m in tf for t in m.transforms if t.header.frame_id == "dvlt_world"}
    assert set(live_tf) == set(translations)
    for key, t in live_tf.items():
        assert np.allclose([t.x, t.y, t.z], translations[key], atol=1e-9)
    live_path = _path_points(trajectory[-1])
    assert len(path) == SAMPLE.frames and [s for s, _ in live_path] == [s for s, _ in path]
    for (_, live), (_, offline) in zip(live_path, path, strict=True):
        assert np.allclose(live, offline, atol=1e-9)


def test_replay_command_drives_a_lossless_node_in_another_process(bag):
    """`dvlt-ros replay --lossless` as a separate process (it inherits this session's
    isolated ROS network settings; the tool itself never changes them)."""
    graph = Graph()
    try:
        with BagSource(bag) as source:
            backend = ground_truth_backend(source, PARAMS["img_size"])
        node = graph.reconstruct_node(backend, cameras=CAMERAS, lossless=True,
                                      use_sim_time=True, input_qos="reliable", **PARAMS)
        command = [sys.executable, "-m", "dvlt_ros.cli.main", "replay", str(bag),
                   "--lossless", "--rate", "0", "--wait-timeout", "30"]
        replay = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert graph.spin_until(lambda: replay.poll() is not None, 120)
        err = replay.stderr.read()
        assert replay.returncode == 0, err
        assert f"{len(CAMERAS) * SAMPLE.frames} images acknowledged" in err
        assert "lossless: /reconstruct_node acknowledges" in err
        assert node.last_report.cycle == SAMPLE.frames and node.last_report.drops == 0
    finally:
        graph.close()
