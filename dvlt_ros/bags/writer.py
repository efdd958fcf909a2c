"""Write rclpy messages into a rosbag2 (mcap by default) with ``rosbags``, no DDS involved.

:class:`BagWriter` serialises each message with ``rclpy.serialization`` (the bytes a live
publisher would send) and registers its type from the ``rosbags`` typestore, so the type
hashes match a live system. Closing an mcap bag fills in the CRCs that ``rosbags`` leaves
at 0 (:func:`~dvlt_ros.bags.mcap_crc.write_crcs`), so readers detect damaged data.

:class:`RecordingNode` lets code written for a ROS node (the reconstruction node's
:class:`~dvlt_ros.node_support.outputs.OutputPublishers`) publish into the bag instead:
``create_publisher(type, topic, qos)`` returns a publisher that writes each message at the
stamp set with :meth:`RecordingNode.set_stamp`, and ``~/x`` topics resolve under the node
name like they do live.
"""

from __future__ import annotations

from pathlib import Path

from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.serialization import serialize_message
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer

from dvlt_ros.bags.mcap_crc import write_crcs
from dvlt_ros.bags.msgtypes import type_name, typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_INFINITE = QosTime(0x7FFFFFFF, 0xFFFFFFFF)


def _qos(latched: bool, depth: int = 1) -> Qos:
    return Qos(
        QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        _INFINITE, _INFINITE, QosLiveliness.AUTOMATIC, _INFINITE, False,
    )


class BagWriter:
    """A rosbag2 being written; topics are added on first use. Close it (or use ``with``)
    to finalise the file; an unclosed bag is not readable by index-based readers."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, latched: bool = False) -> None:
        """Declare ``topic`` (``pkg/msg/Type``); latched topics are recorded transient-local
        (players re-publish them to late subscribers, like ``/tf_static``)."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=[_qos(latched)]
            )
            self.counts[topic] = 0

    def write_raw(self, topic: str, raw: bytes, stamp_ns: int) -> None:
        """Write already serialised CDR bytes of a declared topic."""
        self._writer.write(self._connections[topic], int(stamp_ns), raw)
        self.counts[topic] += 1

    def write(self, topic: str, msg, stamp_ns: int, latched: bool = False) -> None:
        """Serialise an rclpy message and write it with log time ``stamp_ns``."""
        self.add_topic(topic, type_name(type(msg)), latched)
        self.write_raw(topic, serialize_message(msg), stamp_ns)

    def close(self) -> None:
        """Finalise the bag, with its CRCs (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if self.storage == "mcap":
                for file in sorted(self.path.glob("*.mcap")):
                    write_crcs(file)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BagPublisher:
    def __init__(self, owner: RecordingNode, topic: str, latched: bool) -> None:
        self._owner = owner
        self.topic = topic
        self._latched = latched

    def publish(self, msg) -> None:
        self._owner.writer.write(self.topic, msg, self._owner.stamp_ns, self._latched)

    def get_subscription_count(self) -> int:
        return 1


class RecordingNode:
    """Stands in for an rclpy node where only publishers are needed; see the module
    docstring. ``name`` resolves ``~/topic`` to ``/name/topic``."""

    def __init__(self, writer: BagWriter, name: str, namespace: str = "/") -> None:
        self.writer = writer
        self.name = name
        self.namespace = "/" + namespace.strip("/")
        self.stamp_ns = 0

    def set_stamp(self, stamp_ns: int) -> None:
        """Log time of everything published from now on (the source stamp of a cycle)."""
        self.stamp_ns = int(stamp_ns)

    def resolve(self, topic: str) -> str:
        base = self.namespace.rstrip("/")
        if topic.startswith("~/"):
            return f"{base}/{self.name}/{topic[2:]}"
        if topic.startswith("/"):
            return topic
        return f"{base}/{topic}"

    def create_publisher(self, msg_type, topic: str, qos, *args, **kwargs) -> _BagPublisher:
        latched = isinstance(qos, QoSProfile) and (
            qos.durability == DurabilityPolicy.TRANSIENT_LOCAL)
        resolved = self.resolve(topic)
        self.writer.add_topic(resolved, type_name(msg_type), latched)
        return _BagPublisher(self, resolved, latched)
