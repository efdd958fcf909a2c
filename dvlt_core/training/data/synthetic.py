"""Synthetic training scenes: random textured rooms rendered with exact depth and poses.

Each scene is drawn from its own seed: a textured room with random boxes and a free-standing
panel, and a rig of one or more pinhole cameras driving a circle through it
(:mod:`dvlt_core.synthetic`). Frames are rendered on first use and memoised. The renderer's
OpenCV intrinsics (pixel centres at integers) are shifted by +0.5 px to the dataset convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dvlt_core.synthetic import (
    Box,
    CircularTrajectory,
    PinholeCamera,
    Plane,
    SyntheticRig,
    Texture,
    mount,
)
from dvlt_core.synthetic import (
    Scene as RayScene,
)
from dvlt_core.training.data.scene import Frame, Scene


@dataclass(frozen=True)
class SyntheticSpec:
    """Image size, frame count and rig of every generated scene."""

    width: int = 64
    height: int = 64
    num_frames: int = 12
    num_cameras: int = 1
    frame_interval: float = 0.6  # seconds between frames (the base moves ~0.3 m/s)
    focal_range: tuple[float, float] = (0.6, 0.9)  # focal length / width


def random_room(rng: np.random.Generator) -> RayScene:
    """A 7-10 m room (seen from inside) with 3-5 boxes and a panel, all textured."""
    half = float(rng.uniform(3.5, 5.0))
    height = float(rng.uniform(2.6, 3.6))
    seed = int(rng.integers(0, 2**31 - 1))
    prims: list = [Box((-half, -half, 0.0), (half, half, height),
                       Texture(seed, float(rng.uniform(0.8, 1.4)), 2), inside=True)]
    for k in range(int(rng.integers(3, 6))):
        angle = float(rng.uniform(0, 2 * math.pi))
        dist = float(rng.uniform(2.3, half - 0.6))
        cx, cy = dist * math.cos(angle), dist * math.sin(angle)
        sx, sy = rng.uniform(0.3, 0.6, size=2)
        top = float(rng.uniform(0.5, 2.2))
        prims.append(Box((cx - sx, cy - sy, 0.0), (cx + sx, cy + sy, top),
                         Texture(seed + k + 1, float(rng.uniform(0.3, 0.6)), 2)))
    angle = float(rng.uniform(0, 2 * math.pi))
    origin = (2.6 * math.cos(angle), 2.6 * math.sin(angle), 0.3)
    prims.append(Plane(origin, (-math.sin(angle), math.cos(angle), 0.0), (0.0, 0.0, 1.0),
                       Texture(seed + 9, 0.4, 2), u_range=(0.0, 1.6), v_range=(0.0, 1.5)))
    return RayScene(tuple(prims))


def random_rig(rng: np.random.Generator, spec: SyntheticSpec, scene: RayScene) -> SyntheticRig:
    """``spec.num_cameras`` cameras (spread in yaw) on a base circling the room centre."""
    cameras = []
    for c in range(spec.num_cameras):
        f = float(rng.uniform(*spec.focal_range)) * spec.width
        k = np.array([[f, 0.0, (spec.width - 1) / 2], [0.0, f, (spec.height - 1) / 2],
                      [0.0, 0.0, 1.0]])
        yaw = math.radians(float(rng.uniform(-20, 20)) + 40.0 * (c - (spec.num_cameras - 1) / 2))
        pitch = math.radians(float(rng.uniform(0.0, 15.0)))
        cameras.append(PinholeCamera(f"cam{c}", k, spec.width, spec.height,
                                     mount(0.2, 0.0, 0.0, yaw, pitch)))
    trajectory = CircularTrajectory(
        radius=float(rng.uniform(0.8, 1.6)),
        height=float(rng.uniform(1.0, 1.6)),
        speed=float(rng.uniform(0.25, 0.4)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        bob=float(rng.uniform(0.0, 0.08)),
    )
    return SyntheticRig(scene, cameras, trajectory, cache_size=0)


class SyntheticScene(Scene):
    """A random scene from ``seed``; frames ordered by time, then camera."""

    is_synthetic = True

    def __init__(self, seed: int, spec: SyntheticSpec | None = None) -> None:
        self.spec = spec or SyntheticSpec()
        rng = np.random.default_rng(seed)
        self.name = f"synthetic_{seed:06d}"
        self.rig = random_rig(rng, self.spec, random_room(rng))
        self._keys = [(name, i * self.spec.frame_interval)
                      for i in range(self.spec.num_frames) for name in self.rig.names]
        self._cache: dict[int, Frame] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def poses(self) -> np.ndarray:
        return np.stack([self.rig.camera_pose(name, t) for name, t in self._keys])

    def frame(self, index: int) -> Frame:
        cached = self._cache.get(index)
        if cached is None:
            name, t = self._keys[index]
            view = self.rig.render(name, t)
            k = view.k.copy()
            k[0, 2] += 0.5
            k[1, 2] += 0.5
            cached = Frame(view.image, view.depth.astype(np.float32), view.c2w, k)
            self._cache[index] = cached
        return cached


def synthetic_scenes(
    num_scenes: int, seed: int = 0, spec: SyntheticSpec | None = None
) -> list[SyntheticScene]:
    """``num_scenes`` scenes with seeds ``seed, seed + 1, …``."""
    return [SyntheticScene(seed + i, spec) for i in range(num_scenes)]
