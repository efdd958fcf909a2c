"""Message type names (``pkg/msg/Type``) <-> rclpy message classes, and the ``rosbags``
typestore that writes the output bags.

A bag names its message types in data (metadata.yaml, MCAP schemas), so a type name is
never imported as given: only messages of known ROS interface packages resolve to a
class, the ROS 2 core interfaces (:data:`KNOWN_INTERFACE_PACKAGES`) and the interface
packages registered in the ament index of this environment (built or installed ones,
whose ``msg/<Type>`` listing must name the type). Anything else is unknown, whatever
Python module of that name may exist.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from functools import cache
from pathlib import Path

from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

#: The ROS 2 core interface packages (common_interfaces, rcl_interfaces, geometry2's
#: tf2_msgs, unique_identifier_msgs): the pip ROS wheels and `.ci/setup.sh` install the
#: ones this project uses.
KNOWN_INTERFACE_PACKAGES = frozenset({
    "action_msgs", "actionlib_msgs", "builtin_interfaces", "diagnostic_msgs",
    "geometry_msgs", "lifecycle_msgs", "nav_msgs", "rcl_interfaces", "rosgraph_msgs",
    "sensor_msgs", "service_msgs", "shape_msgs", "statistics_msgs", "std_msgs",
    "stereo_msgs", "tf2_msgs", "trajectory_msgs", "type_description_interfaces",
    "unique_identifier_msgs", "visualization_msgs",
})

_PACKAGE = re.compile(r"[a-z][a-z0-9_]*")
_TYPE = re.compile(r"[A-Z][A-Za-z0-9]*")
_AMENT_INTERFACES = Path("share", "ament_index", "resource_index", "rosidl_interfaces")


class UnknownMessageTypeError(LookupError):
    """A type name that does not resolve to a message class; the text says why."""


@cache
def typestore() -> Typestore:
    """ROS 2 Kilted message definitions (they include tf2_msgs and diagnostic_msgs)."""
    return get_typestore(Stores.ROS2_KILTED)


def type_name(cls: type) -> str:
    """``sensor_msgs.msg.Image`` -> ``"sensor_msgs/msg/Image"``."""
    package = cls.__module__.split(".")[0]
    kind = cls.__module__.split(".")[1]
    return f"{package}/{kind}/{cls.__name__}"


def _ament_prefixes() -> list[Path]:
    """Install prefixes of this environment: AMENT_PREFIX_PATH (a sourced ROS or
    workspace), then this Python's prefix (where the pip ROS wheels register)."""
    paths = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [*paths, Path(sys.prefix)]


def _registered_messages(package: str) -> set[str] | None:
    """Message names the ament index lists for ``package``, or None when it is not
    registered as an interface package in any prefix."""
    for prefix in _ament_prefixes():
        entry = prefix / _AMENT_INTERFACES / package
        if entry.is_file():
            listed = entry.read_text(encoding="utf-8", errors="replace").split()
            return {Path(item).stem for item in listed if item.startswith("msg/")}
    return None


def message_class(msgtype: str) -> type:
    """The rclpy class of ``pkg/msg/Type`` of a known interface package (see the module
    docstring); :class:`UnknownMessageTypeError` otherwise."""
    parts = msgtype.split("/")
    if (len(parts) != 3 or parts[1] != "msg" or not _PACKAGE.fullmatch(parts[0])
            or not _TYPE.fullmatch(parts[2])):
        raise UnknownMessageTypeError(f"{msgtype!r} is not a ROS message type name (pkg/msg/Type)")
    package, _, name = parts
    registered = _registered_messages(package)
    if registered is None and package not in KNOWN_INTERFACE_PACKAGES:
        raise UnknownMessageTypeError(
            f"type {msgtype} is not a message of a known ROS interface package (the ROS 2 "
            "core interfaces, or a package registered in the ament index: build its "
            "interface package and source the workspace)")
    if registered is not None and name not in registered:
        raise UnknownMessageTypeError(f"interface package {package} has no message {name}")
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError:
        raise UnknownMessageTypeError(
            f"type {msgtype} is not installed in this Python environment (install or build "
            f"its message package {package})") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not hasattr(type(cls), "__import_type_support__"):
        raise UnknownMessageTypeError(f"{package}.msg has no message class {name}")
    return cls
