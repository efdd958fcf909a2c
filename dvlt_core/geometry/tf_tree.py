"""A transform tree in the manner of tf2, ROS-free: static and time-stamped edges, chained
through their parents, interpolated in time (linear translation, quaternion slerp).

Each frame has at most one parent. A static edge holds for all time; a time-stamped edge is
interpolated between two bracketing samples at most ``max_interval_ns`` apart, or taken from
the nearest sample within ``tolerance_ns`` (0: exact stamps only, as tf2 does; nothing is
extrapolated beyond that). ``cache_time_ns`` bounds the history kept per edge (tf2 keeps 10 s
by default); ``None`` keeps everything, as offline tools want. Frame ids are compared without
a leading ``/``. Lookups that cannot be answered raise :class:`TransformError` saying why.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dvlt_core.geometry.transforms import quaternion_to_rotation, rotation_to_quaternion, slerp


class TransformError(LookupError):
    """A transform the tree cannot give or take (the base of the errors below)."""


class FrameNotFoundError(TransformError):
    """The frame is in no transform the tree holds."""


class NotConnectedError(TransformError):
    """The two frames are in different trees."""


class ExtrapolationError(TransformError):
    """A time-stamped edge has no samples close enough around the stamp."""


def _frame(frame_id: str) -> str:
    return frame_id.lstrip("/")


def rigid_from_translation_quaternion(translation, quaternion_xyzw) -> np.ndarray:
    """4x4 pose from a translation and a scalar-last quaternion (normalised here)."""
    out = np.eye(4)
    out[:3, :3] = quaternion_to_rotation(np.asarray(quaternion_xyzw, dtype=np.float64))
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


@dataclass
class _Edge:
    parent: str
    static: np.ndarray | None = None  # 4x4 for a static edge
    stamps: list[int] = field(default_factory=list)  # sorted, for a time-stamped edge
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)

    def add(self, stamp_ns: int, pose: np.ndarray, cache_time_ns: int | None) -> None:
        i = bisect.bisect_left(self.stamps, stamp_ns)
        quaternion = rotation_to_quaternion(np.ascontiguousarray(pose[:3, :3], dtype=np.float64))
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.translations[i], self.quaternions[i] = pose[:3, 3].copy(), quaternion
        else:
            self.stamps.insert(i, stamp_ns)
            self.translations.insert(i, pose[:3, 3].astype(np.float64))
            self.quaternions.insert(i, quaternion)
        if cache_time_ns is not None:
            keep = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_time_ns)
            del self.stamps[:keep], self.translations[:keep], self.quaternions[:keep]

    def at(self, child: str, stamp_ns: int, max_interval_ns: int, tolerance_ns: int
           ) -> np.ndarray:
        if self.static is not None:
            return self.static
        stamps = self.stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return rigid_from_translation_quaternion(self.translations[i], self.quaternions[i])
        if 0 < i < len(stamps) and stamps[i] - stamps[i - 1] <= max_interval_ns:
            a = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
            translation = (1 - a) * self.translations[i - 1] + a * self.translations[i]
            return rigid_from_translation_quaternion(
                translation, slerp(self.quaternions[i - 1], self.quaternions[i], a))
        nearest = min((j for j in (i - 1, i) if 0 <= j < len(stamps)),
                      key=lambda j: abs(stamps[j] - stamp_ns))
        if abs(stamps[nearest] - stamp_ns) <= tolerance_ns:
            return rigid_from_translation_quaternion(self.translations[nearest],
                                                     self.quaternions[nearest])
        raise ExtrapolationError(self._why_not(child, stamp_ns, i, max_interval_ns))

    def _why_not(self, child: str, stamp_ns: int, i: int, max_interval_ns: int) -> str:
        edge = f"{self.parent!r} -> {child!r}"
        first, last = self.stamps[0], self.stamps[-1]
        if i == 0:
            return (f"{edge} at {stamp_ns * 1e-9:.9f} s would extrapolate into the past: its "
                    f"earliest sample is {(first - stamp_ns) * 1e-9:.3f} s later")
        if i == len(self.stamps):
            return (f"{edge} at {stamp_ns * 1e-9:.9f} s would extrapolate into the future: its "
                    f"latest sample is {(stamp_ns - last) * 1e-9:.3f} s earlier")
        gap = (self.stamps[i] - self.stamps[i - 1]) * 1e-9
        return (f"{edge} at {stamp_ns * 1e-9:.9f} s falls in a {gap:.3f} s gap between "
                f"samples (at most {max_interval_ns * 1e-9:.3f} s is interpolated)")


class TfTree:
    """Static and time-stamped transforms ``parent_from_child`` (the child's pose in its
    parent), looked up between any two connected frames at a stamp."""

    def __init__(
        self,
        max_interval_ns: int = 500_000_000,
        tolerance_ns: int = 0,
        cache_time_ns: int | None = None,
    ) -> None:
        self.max_interval_ns = int(max_interval_ns)
        self.tolerance_ns = int(tolerance_ns)
        self.cache_time_ns = None if cache_time_ns is None else int(cache_time_ns)
        self._edges: dict[str, _Edge] = {}

    @property
    def frames(self) -> set[str]:
        """Every frame the tree knows, children and roots."""
        return set(self._edges) | {edge.parent for edge in self._edges.values()}

    def clear(self, keep_static: bool = False) -> None:
        """Forget every transform, or only the time-stamped ones (a time jump back: static
        edges hold for all time, as tf2 keeps them)."""
        self._edges = {child: edge for child, edge in self._edges.items()
                       if keep_static and edge.static is not None}

    def set_transform(self, parent: str, child: str, parent_from_child: np.ndarray,
                      stamp_ns: int | None = None) -> None:
        """Add one transform; ``stamp_ns`` None makes the edge static."""
        parent, child = _frame(parent), _frame(child)
        if parent == child:
            raise TransformError(f"transform from {parent!r} to itself")
        pose = np.asarray(parent_from_child, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise TransformError(f"{parent!r} -> {child!r}: a finite 4x4 pose is needed")
        edge = self._edges.get(child)
        if edge is not None and edge.parent != parent:
            raise TransformError(f"frame {child!r} has two parents ({edge.parent!r} and "
                                 f"{parent!r}); a TF tree allows one")
        if edge is not None and (edge.static is not None) != (stamp_ns is None):
            raise TransformError(f"{parent!r} -> {child!r} is published both as a static and "
                                 "as a time-stamped transform")
        if edge is None:
            edge = self._edges[child] = _Edge(parent)
        if stamp_ns is None:
            edge.static = pose.copy()
        else:
            edge.add(int(stamp_ns), pose, self.cache_time_ns)

    def add_tf_messages(self, messages: Iterable[Any], static: bool) -> None:
        """Add every transform of ``tf2_msgs/TFMessage``-shaped messages (rclpy or rosbags
        objects: only their fields are read)."""
        for message in messages:
            for tf in message.transforms:
                t, r = tf.transform.translation, tf.transform.rotation
                pose = rigid_from_translation_quaternion((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))
                stamp = tf.header.stamp.sec * 1_000_000_000 + tf.header.stamp.nanosec
                self.set_transform(tf.header.frame_id, tf.child_frame_id, pose,
                                   None if static else stamp)

    def lookup_root(self, frame: str, stamp_ns: int) -> tuple[str, np.ndarray]:
        """``(root, root_from_frame)`` at ``stamp_ns``, chaining every edge up to the root."""
        root = self._ancestors(frame)[-1]
        return root, self._up_to(frame, root, int(stamp_ns))

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """``target_from_source`` (the pose of ``source`` in ``target``) at ``stamp_ns``.

        Only the edges below the frames' lowest common ancestor are evaluated, as in tf2: two
        frames joined by static edges are answered at any stamp, whatever moves above them."""
        target_chain = self._ancestors(target)
        source_chain = self._ancestors(source)
        if target_chain[-1] != source_chain[-1]:
            raise NotConnectedError(f"frames {_frame(target)!r} and {_frame(source)!r} are not "
                                    f"connected (roots {target_chain[-1]!r} and "
                                    f"{source_chain[-1]!r})")
        in_target_chain = set(target_chain)
        common = next(frame for frame in source_chain if frame in in_target_chain)
        stamp_ns = int(stamp_ns)
        common_from_target = self._up_to(target, common, stamp_ns)
        common_from_source = self._up_to(source, common, stamp_ns)
        return np.linalg.inv(common_from_target) @ common_from_source

    def _ancestors(self, frame: str) -> list[str]:
        """``frame`` and its parents up to the root (raises on unknown frames and cycles)."""
        frame = _frame(frame)
        if frame not in self.frames:
            raise FrameNotFoundError(f"frame {frame!r} is not in the TF tree")
        chain = [frame]
        while frame in self._edges:
            frame = self._edges[frame].parent
            if frame in chain:
                raise TransformError(f"the TF tree has a cycle through {frame!r}")
            chain.append(frame)
        return chain

    def _up_to(self, frame: str, ancestor: str, stamp_ns: int) -> np.ndarray:
        """``ancestor_from_frame`` at ``stamp_ns`` (``ancestor`` is on ``frame``'s chain)."""
        frame = _frame(frame)
        pose = np.eye(4)
        while frame != ancestor:
            edge = self._edges[frame]
            pose = edge.at(frame, stamp_ns, self.max_interval_ns, self.tolerance_ns) @ pose
            frame = edge.parent
        return pose
