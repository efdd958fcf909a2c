"""A bag's ``/tf`` and ``/tf_static`` as the robot's TF for offline processing.

:class:`BagTransforms` fills a :class:`dvlt_core.geometry.TfTree` (with the live node's
history bound, :data:`~dvlt_ros.node_support.tf_listener.DEFAULT_CACHE_TIME_S`, so that long
bags use bounded memory) from TF messages as the bag is read, and says when a stamp can be
looked up without extrapolating (:meth:`BagTransforms.lag`): a robot's TF is recorded slightly
after the images it belongs to, so the processor holds each snapshot back until every
time-stamped edge seen so far has a sample at or after its stamp, for at most a bounded
look-ahead (:data:`LOOKAHEAD_NS` of log time) or until the bag ends.
The pose of one sensor in another (a depth camera in its colour camera) is a plain
lookup: the tree evaluates only the edges below their common ancestor, so a static mount
needs no motion sample.

Bad transforms (non-finite values, a zero quaternion, an empty frame id, a frame given a
second parent, an edge both static and time-stamped) are dropped with a warning
``tf_invalid`` (the rest of the message is kept); a time jump back beyond the history (a
looped recording) clears the time-stamped edges, as the live listener does.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from rclpy.serialization import deserialize_message
from tf2_msgs.msg import TFMessage

from dvlt_core.geometry import TfTree, TransformError
from dvlt_ros.bags.issues import IssueLog
from dvlt_ros.conversions.tf import matrix_from_transform, ns_from_stamp
from dvlt_ros.node_support.tf_listener import DEFAULT_CACHE_TIME_S

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
#: How far (log time) reading may run ahead of a snapshot waiting for its TF: beyond it, an
#: edge that has fallen silent is stale and the snapshot goes on without it (the session
#: reports the failed lookups).
LOOKAHEAD_NS = 500_000_000
#: Distinct kinds of dropped transforms (edge and reason) counted for the summary.
MAX_DROP_KINDS = 20


class BagTransforms:
    """The robot's TF read from a bag (see the module docstring); :attr:`tree` answers
    the session's lookups."""

    def __init__(self, issues: IssueLog, cache_time_s: float = DEFAULT_CACHE_TIME_S) -> None:
        cache_time_ns = round(cache_time_s * 1e9)
        self.tree = TfTree(max_interval_ns=cache_time_ns, cache_time_ns=cache_time_ns)
        self.issues = issues
        #: ``"'parent' -> 'child': reason"`` -> how many were dropped (the first
        #: MAX_DROP_KINDS kinds; the rest count as "other").
        self.dropped: Counter[str] = Counter()
        self._newest: dict[str, int] = {}  # child frame -> newest stamp of its edge
        self._stale_warned: set[str] = set()

    def add(self, raw: bytes, static: bool, topic: str, log_ns: int) -> None:
        """Add every transform of one serialised TFMessage; bad ones are dropped (WARN)."""
        message = deserialize_message(raw, TFMessage)
        for transform in message.transforms:
            parent, child = transform.header.frame_id, transform.child_frame_id
            stamp_ns = ns_from_stamp(transform.header.stamp)
            problem = _problem(transform)
            if problem is None and not static:
                newest = max(self._newest.values(), default=stamp_ns)
                if stamp_ns < newest - self.tree.cache_time_ns:
                    self.tree.clear(keep_static=True)
                    self._newest.clear()
                    self.issues.warn("tf_time_jump",
                                     f"TF stamps jumped back by {(newest - stamp_ns) * 1e-9:.3f} "
                                     "s: the time-stamped transforms start over", topic, log_ns)
            if problem is None:
                pose = matrix_from_transform(transform)
                try:
                    self.tree.set_transform(parent, child, pose, None if static else stamp_ns)
                except TransformError as exc:
                    problem = str(exc)
            if problem is not None:
                kind = f"{parent!r} -> {child!r}: {problem}"
                known = kind in self.dropped or len(self.dropped) < MAX_DROP_KINDS
                self.dropped[kind if known else "other"] += 1
                self.issues.warn("tf_invalid", f"transform {parent!r} -> {child!r} at "
                                 f"{stamp_ns * 1e-9:.3f} s dropped: {problem}", topic, log_ns)
                continue
            if not static:
                key = child.lstrip("/")
                self._newest[key] = max(self._newest.get(key, stamp_ns), stamp_ns)

    def lag(self, stamp_ns: int) -> list[str]:
        """The time-stamped edges (child frames) with no sample at or after ``stamp_ns``
        yet: a lookup at that stamp would extrapolate along them."""
        return sorted(child for child, newest in self._newest.items() if newest < stamp_ns)

    def warn_stale(self, stamp_ns: int, log_ns: int) -> None:
        """Warn once per edge that it stopped before ``stamp_ns`` (after the look-ahead)."""
        for child in self.lag(stamp_ns):
            if child in self._stale_warned:
                continue
            self._stale_warned.add(child)
            newest = self._newest[child]
            self.issues.warn(
                "tf_stale",
                f"TF edge -> {child!r} has no sample after {newest * 1e-9:.3f} s, images go on "
                f"at {stamp_ns * 1e-9:.3f} s: lookups past its end fail (no extrapolation); "
                "record the TF publishers for the whole bag", TF_TOPIC, log_ns)

    @property
    def has_dynamic(self) -> bool:
        return bool(self._newest)


def _problem(transform) -> str | None:
    """Why a TransformStamped is unusable before it reaches the tree, or None."""
    if not transform.header.frame_id.strip("/ ") or not transform.child_frame_id.strip("/ "):
        return "empty frame id"
    t, r = transform.transform.translation, transform.transform.rotation
    values = (t.x, t.y, t.z, r.x, r.y, r.z, r.w)
    if not all(math.isfinite(v) for v in values):
        return "non-finite translation or rotation"
    if np.linalg.norm([r.x, r.y, r.z, r.w]) < 1e-9:
        return "zero quaternion"
    return None
