"""The robot's TF, live: ``/tf`` and ``/tf_static`` into a transform tree the node can query.

Where a ROS install provides ``tf2_ros``, its ``Buffer`` and ``TransformListener`` are used
(the reference implementation, shared with the rest of the robot's stack). Elsewhere (the
pip route) the node subscribes itself and fills :class:`dvlt_core.geometry.TfTree`, with
tf2's QoS (``/tf`` reliable keep-last 100, ``/tf_static`` reliable transient-local) and a
bounded history (``cache_time``; any two samples in it are interpolated, as tf2 does).
Either way :meth:`TfListener.lookup` answers
``target_from_source`` as a 4x4 matrix at a stamp, or raises one of
:class:`~dvlt_core.geometry.TransformError`'s subclasses saying why not; it never
extrapolates. A time jump back (a looping bag, a restarted simulation) clears the history.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import yaml
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from tf2_msgs.msg import TFMessage

from dvlt_core.geometry import (
    ExtrapolationError,
    FrameNotFoundError,
    NotConnectedError,
    TfTree,
    TransformError,
)
from dvlt_ros.conversions.tf import matrix_from_transform

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: tf2's default history per edge.
DEFAULT_CACHE_TIME_S = 10.0


def _tf2_ros():
    """The tf2_ros module where a ROS install has it, else None (the pip route)."""
    try:
        import tf2_ros
    except ImportError:
        return None
    return tf2_ros


class TfListener:
    """Listens to TF on ``node`` (see the module docstring). ``on_problem(message)`` hears
    of transforms that cannot be added (a second parent, a non-finite pose); they are
    dropped, the rest of the message is kept."""

    def __init__(
        self,
        node: Node,
        cache_time_s: float = DEFAULT_CACHE_TIME_S,
        on_problem: Callable[[str], None] | None = None,
        use_tf2_ros: bool | None = None,
    ) -> None:
        self._node = node
        self._on_problem = on_problem or (lambda message: None)
        tf2_ros = _tf2_ros() if use_tf2_ros in (None, True) else None
        if use_tf2_ros and tf2_ros is None:
            raise ImportError("tf2_ros is not installed (source a ROS 2 install)")
        self.backend = "tf2_ros" if tf2_ros is not None else "dvlt_core.TfTree"
        if tf2_ros is not None:
            self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s))
            self._listener = tf2_ros.TransformListener(self._buffer, node)
            self._tf2 = tf2_ros
            return
        self._lock = threading.Lock()
        # Like tf2: any two samples in the history are interpolated; static edges never
        # expire.
        cache_time_ns = round(cache_time_s * 1e9)
        self._tree = TfTree(max_interval_ns=cache_time_ns, cache_time_ns=cache_time_ns)
        self._latest_ns = 0
        self._subscriptions = [
            node.create_subscription(TFMessage, "/tf", lambda m: self._add(m, False), TF_QOS),
            node.create_subscription(TFMessage, "/tf_static", lambda m: self._add(m, True),
                                     TF_STATIC_QOS),
        ]

    @property
    def frames(self) -> set[str]:
        """Every frame TF has named so far."""
        if self.backend == "tf2_ros":
            return set(yaml.safe_load(self._buffer.all_frames_as_yaml()) or {})
        with self._lock:
            return self._tree.frames

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """``target_from_source`` (the pose of ``source`` in ``target``) at ``stamp_ns``."""
        if self.backend == "tf2_ros":
            return self._lookup_tf2(target, source, stamp_ns)
        with self._lock:
            return self._tree.lookup(target, source, stamp_ns)

    def _add(self, message: TFMessage, static: bool) -> None:
        with self._lock:
            for transform in message.transforms:
                stamp_ns = Time.from_msg(transform.header.stamp).nanoseconds
                if not static and stamp_ns < self._latest_ns - self._tree.cache_time_ns:
                    # Time went back beyond the history (a looping bag, a restarted
                    # simulation): a new timeline; static transforms still hold.
                    self._tree.clear(keep_static=True)
                    self._latest_ns = 0
                try:
                    self._tree.set_transform(transform.header.frame_id, transform.child_frame_id,
                                       matrix_from_transform(transform),
                                       None if static else stamp_ns)
                except TransformError as exc:
                    self._on_problem(f"TF {'static ' if static else ''}transform dropped: {exc}")
                    continue
                if not static:
                    self._latest_ns = max(self._latest_ns, stamp_ns)

    def _lookup_tf2(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        tf2 = self._tf2
        try:
            found = self._buffer.lookup_transform(target.lstrip("/"), source.lstrip("/"),
                                                  Time(nanoseconds=stamp_ns))
        except tf2.ExtrapolationException as exc:
            raise ExtrapolationError(str(exc)) from None
        except tf2.ConnectivityException as exc:
            raise NotConnectedError(str(exc)) from None
        except tf2.LookupException as exc:
            raise FrameNotFoundError(str(exc)) from None
        except tf2.TransformException as exc:
            raise TransformError(str(exc)) from None
        return matrix_from_transform(found)
