"""ROS smoke test over real DDS in the pip-only environment.

One node publishes sensor_msgs/Image, sensor_msgs/PointCloud2 and tf2_msgs/TFMessage on
/tf and on /tf_static (transient local); another node in the same process, and a node in
a second process, receive them intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from dvlt_ros.conversions.image import array_to_image, image_to_array
from dvlt_ros.conversions.pointcloud import cloud_to_array, points_to_cloud, unpack_rgb
from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped

TF_MESSAGE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
LATCHED = QoSProfile(
    depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
)
STAMP_NS = 1_700_000_123_456_789_000


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture
def payload():
    rng = np.random.default_rng(0)
    header = Header(stamp=stamp_from_ns(STAMP_NS), frame_id="cam0_optical_frame")
    pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    points = rng.normal(size=(500, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(500, 3), dtype=np.uint8)
    conf = rng.uniform(1, 50, size=500).astype(np.float32)
    pose = np.eye(4)
    pose[:3, 3] = (1.0, 2.0, 3.0)
    return {
        "pixels": pixels, "points": points, "colors": colors, "conf": conf,
        "image": array_to_image(pixels, "rgb8", header),
        "cloud": points_to_cloud(points, colors, conf, Header(stamp=header.stamp, frame_id="map")),
        "tf": tf_message([transform_stamped(pose, "map", "cam0_dvlt", header.stamp)]),
        "tf_static": tf_message([transform_stamped(pose, "base_link", "cam0_link", header.stamp)]),
    }


def _spin_until(executor, condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_ros_network_is_isolated():
    """The session runs on loopback in a claimed domain, and children inherit it."""
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101
    out = subprocess.run(
        [sys.executable, "-c", "from dvlt_ros.testing.ros_network import "
         "check_ros_network_isolated as c; c(); import os; print(os.environ['ROS_DOMAIN_ID'])"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == os.environ["ROS_DOMAIN_ID"]


def test_rclpy_init_refuses_default_discovery(monkeypatch):
    """The conftest's guard stops rclpy.init when discovery would leave loopback."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    context = rclpy.Context()
    with pytest.raises(RuntimeError, match="ROS_AUTOMATIC_DISCOVERY_RANGE"):
        rclpy.init(context=context)
    assert not context.ok()


def test_same_process_delivery(ros_context, payload):
    from rclpy.executors import SingleThreadedExecutor

    talker = rclpy.create_node("smoke_talker", context=ros_context)
    listener = rclpy.create_node("smoke_listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    executor.add_node(listener)
    got: dict[str, object] = {}
    for topic, kind, qos in (
        ("/smoke/image", Image, 10), ("/smoke/points", PointCloud2, 10),
        ("/tf", TFMessage, 10), ("/tf_static", TFMessage, LATCHED),
    ):
        listener.create_subscription(kind, topic, lambda m, t=topic: got.setdefault(t, m), qos)
    pubs = {
        "/smoke/image": (talker.create_publisher(Image, "/smoke/image", 10), payload["image"]),
        "/smoke/points": (talker.create_publisher(PointCloud2, "/smoke/points", 10),
                          payload["cloud"]),
        "/tf": (talker.create_publisher(TFMessage, "/tf", 10), payload["tf"]),
        "/tf_static": (talker.create_publisher(TFMessage, "/tf_static", LATCHED),
                       payload["tf_static"]),
    }
    assert _spin_until(executor, lambda: all(p.get_subscription_count() for p, _ in pubs.values()))
    for pub, msg in pubs.values():
        pub.publish(msg)
    assert _spin_until(executor, lambda: len(got) == 4)

    image = got["/smoke/image"]
    assert image.header.frame_id == "cam0_optical_frame"
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == divmod(STAMP_NS, 10**9)
    np.testing.assert_array_equal(image_to_array(image), payload["pixels"])
    cloud = cloud_to_array(got["/smoke/points"])
    np.testing.assert_array_equal(np.stack([cloud["x"], cloud["y"], cloud["z"]], 1),
                                  payload["points"])
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), payload["colors"])
    np.testing.assert_array_equal(cloud["confidence"], payload["conf"])
    assert got["/tf"].transforms[0].child_frame_id == "cam0_dvlt"
    assert got["/tf_static"].transforms[0].transform.translation.z == 3.0

    infos = talker.get_publishers_info_by_topic("/tf")
    assert [str(i.topic_type_hash) for i in infos] == [TF_MESSAGE_HASH]
    executor.shutdown()


def test_second_process_delivery(ros_context, payload):
    """A separate process receives every topic; /tf_static arrives although it was
    published before that process existed (transient local)."""
    from rclpy.executors import SingleThreadedExecutor

    talker = rclpy.create_node("smoke_talker2", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    static_pub = talker.create_publisher(TFMessage, "/tf_static", LATCHED)
    static_pub.publish(payload["tf_static"])
    pubs = [
        (talker.create_publisher(Image, "/smoke2/image", 10), payload["image"]),
        (talker.create_publisher(PointCloud2, "/smoke2/points", 10), payload["cloud"]),
        (talker.create_publisher(TFMessage, "/tf", 10), payload["tf"]),
    ]
    script = Path(__file__).with_name("ros_smoke_listener.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "/smoke2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert _spin_until(executor, lambda: all(p.get_subscription_count() for p, _ in pubs), 30)
        # Volatile topics: keep publishing until the other side has matched and received.
        while proc.poll() is None:
            for pub, msg in pubs:
                pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    got = json.loads(out.strip().splitlines()[-1])
    image_digest = hashlib.sha256(bytes(payload["image"].data)).hexdigest()
    assert got["/smoke2/image"]["sha256"] == image_digest
    assert got["/smoke2/image"]["stamp"] == list(divmod(STAMP_NS, 10**9))
    assert got["/smoke2/points"]["sha256"] == hashlib.sha256(
        bytes(payload["cloud"].data)).hexdigest()
    assert got["/tf"]["transforms"][0][:2] == ["map", "cam0_dvlt"]
    assert got["/tf_static"]["transforms"][0][:2] == ["base_link", "cam0_link"]
    executor.shutdown()
