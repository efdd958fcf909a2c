"""QoS profiles of the reconstruction node.

Live camera inputs default to the sensor-data profile (best effort, keep last 5): a
late frame is worth less than a fresh one and best-effort subscribers also match
reliable publishers. Bag replay selects reliable inputs so that no frame is lost.
Outputs are reliable; values a late subscriber needs (the latest CameraInfo, the
trajectory, the frusta) are transient local, keep last 1.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from dvlt_ros.pipeline.settings import INPUT_QOS_CHOICES


def input_qos(kind: str) -> QoSProfile:
    """Profile for camera image and CameraInfo subscriptions: ``sensor_data`` or
    ``reliable``. Both keep only a few messages, so a slow node never queues a backlog."""
    if kind == "sensor_data":
        return qos_profile_sensor_data
    if kind == "reliable":
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=5,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
    raise ValueError(f"input_qos must be one of {INPUT_QOS_CHOICES}, got {kind!r}")


# Streams (cloud, depth, confidence, /tf): reliable, shallow so that a slow subscriber
# gets recent data rather than a backlog.
OUTPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=2,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# The last value is what matters (CameraInfo, Path, frusta, /tf_static): a subscriber
# that starts late receives it at once.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

DIAGNOSTICS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
