"""Second-process side of the ROS smoke test: receive one message per topic, print a digest.

Run by tests/ros/test_ros_smoke.py with the test session's isolated ROS environment.
Prints one JSON line and exits 0 once every topic has delivered, or exits 1 on timeout.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from tf2_msgs.msg import TFMessage

from dvlt_ros.testing.ros_network import check_ros_network_isolated


def digest(msg) -> dict:
    if isinstance(msg, TFMessage):
        return {
            "transforms": [
                [t.header.frame_id, t.child_frame_id, t.header.stamp.sec, t.header.stamp.nanosec,
                 t.transform.translation.x, t.transform.rotation.w]
                for t in msg.transforms
            ]
        }
    return {
        "sha256": hashlib.sha256(bytes(msg.data)).hexdigest(),
        "frame_id": msg.header.frame_id,
        "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
        "size": [msg.height, msg.width],
    }


def main() -> int:
    check_ros_network_isolated()
    prefix = sys.argv[1]
    rclpy.init()
    node = rclpy.create_node("smoke_listener")
    received: dict[str, dict] = {}
    latched = QoSProfile(
        depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
        reliability=ReliabilityPolicy.RELIABLE,
    )
    for topic, kind, qos in (
        (f"{prefix}/image", Image, 10),
        (f"{prefix}/points", PointCloud2, 10),
        ("/tf", TFMessage, 10),
        ("/tf_static", TFMessage, latched),
    ):
        node.create_subscription(
            kind, topic, lambda msg, topic=topic: received.setdefault(topic, digest(msg)), qos
        )
    deadline = time.monotonic() + 30
    while len(received) < 4 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps(received), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if len(received) == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
