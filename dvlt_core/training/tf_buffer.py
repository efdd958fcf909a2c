"""A small offline transform buffer (TF tree) for converting recorded bags, ROS-free.

Transforms are stored per (parent, child) edge: static edges once, dynamic edges as time series
that are interpolated (linear translation, quaternion slerp) between bracketing samples.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np


def quat_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (scalar last) → 3x3 rotation."""
    q = np.array([x, y, z, w], dtype=np.float64)
    q /= np.linalg.norm(q)
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def transform(translation, quaternion_xyzw) -> np.ndarray:
    """4x4 from a translation and a scalar-last quaternion."""
    out = np.eye(4)
    out[:3, :3] = quat_to_matrix(*quaternion_xyzw)
    out[:3, 3] = translation
    return out


def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)


@dataclass
class _Series:
    stamps: list[float] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)

    def add(self, stamp: float, translation, quaternion) -> None:
        i = bisect.bisect(self.stamps, stamp)
        self.stamps.insert(i, stamp)
        self.translations.insert(i, np.asarray(translation, dtype=np.float64))
        q = np.asarray(quaternion, dtype=np.float64)
        self.quaternions.insert(i, q / np.linalg.norm(q))

    def at(self, stamp: float, tolerance: float, max_gap: float) -> np.ndarray | None:
        """Interpolated 4x4 at ``stamp``: between samples at most ``max_gap`` apart, or the
        nearest sample within ``tolerance``; None otherwise."""
        i = bisect.bisect_left(self.stamps, stamp)
        if 0 < i < len(self.stamps):
            t0, t1 = self.stamps[i - 1], self.stamps[i]
            if t1 - t0 <= max_gap:
                a = 0.0 if t1 == t0 else (stamp - t0) / (t1 - t0)
                trans = (1 - a) * self.translations[i - 1] + a * self.translations[i]
                quat = _slerp(self.quaternions[i - 1], self.quaternions[i], a)
                return transform(trans, quat)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self.stamps)]
        if not candidates:
            return None
        j = min(candidates, key=lambda k: abs(self.stamps[k] - stamp))
        if abs(self.stamps[j] - stamp) > tolerance:
            return None
        return transform(self.translations[j], self.quaternions[j])


class TransformBuffer:
    """Static and dynamic transforms ``parent ← child`` (the pose of child in parent)."""

    def __init__(self, tolerance: float = 0.05, max_gap: float = 0.5) -> None:
        self.tolerance = tolerance
        self.max_gap = max_gap
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._dynamic: dict[str, _Series] = {}

    def _link(self, parent: str, child: str) -> None:
        known = self._parent.get(child)
        if known is not None and known != parent:
            raise ValueError(f"frame {child!r} has two parents ({known!r} and {parent!r}); a TF "
                             "tree allows one")
        self._parent[child] = parent

    def add_static(self, parent: str, child: str, translation, quaternion_xyzw) -> None:
        self._link(parent.lstrip("/"), child.lstrip("/"))
        self._static[child.lstrip("/")] = transform(translation, quaternion_xyzw)

    def add_dynamic(self, stamp: float, parent: str, child: str, translation,
                    quaternion_xyzw) -> None:
        child = child.lstrip("/")
        self._link(parent.lstrip("/"), child)
        self._dynamic.setdefault(child, _Series()).add(stamp, translation, quaternion_xyzw)

    def _to_root(self, frame: str, stamp: float) -> tuple[str, np.ndarray] | None:
        pose = np.eye(4)
        seen = set()
        while frame in self._parent:
            if frame in seen:
                raise ValueError(f"TF cycle through {frame!r}")
            seen.add(frame)
            if frame in self._static:
                edge = self._static[frame]
            else:
                edge = self._dynamic[frame].at(stamp, self.tolerance, self.max_gap)
                if edge is None:
                    return None
            pose = edge @ pose
            frame = self._parent[frame]
        return frame, pose

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray | None:
        """Pose of ``source`` in ``target`` at ``stamp`` (4x4), or None if not available."""
        a = self._to_root(target.lstrip("/"), stamp)
        b = self._to_root(source.lstrip("/"), stamp)
        if a is None or b is None:
            return None
        if a[0] != b[0]:
            raise ValueError(f"frames {target!r} and {source!r} are not connected in the TF tree")
        return np.linalg.inv(a[1]) @ b[1]

    def frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())
