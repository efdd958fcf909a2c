"""Message type names (``pkg/msg/Type``) <-> rclpy message classes, and the ``rosbags``
typestore that writes the output bags."""

from __future__ import annotations

import importlib
from functools import cache

from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)


@cache
def typestore() -> Typestore:
    """ROS 2 Kilted message definitions (they include tf2_msgs and diagnostic_msgs)."""
    return get_typestore(Stores.ROS2_KILTED)


def type_name(cls: type) -> str:
    """``sensor_msgs.msg.Image`` -> ``"sensor_msgs/msg/Image"``."""
    package = cls.__module__.split(".")[0]
    kind = cls.__module__.split(".")[1]
    return f"{package}/{kind}/{cls.__name__}"


def message_class(msgtype: str) -> type | None:
    """The rclpy class of ``pkg/msg/Type``, or None when that package is not installed."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return None
    package, kind, name = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ImportError:
        return None
    return getattr(module, name, None)
