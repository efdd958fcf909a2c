"""A multi-camera rig moving through a synthetic scene along a known trajectory.

Frames: the world is the scene's frame (metres, z up). The rig's base frame follows
REP 103 (x forward, y left, z up); each camera is mounted at a fixed ``base_from_camera``
pose of its OpenCV optical frame (x right, y down, z forward). Times are seconds.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from dvlt_core.synthetic.scene import Box, Plane, Scene, Texture

#: Rotation of an optical frame (x right, y down, z forward) in a REP 103 body frame.
BASE_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 ``[R | t]``."""
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = translation
    return out


def mount(x: float, y: float, z: float, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """``base_from_camera`` of an optical frame at (x, y, z) in the base, turned by ``yaw``
    (left positive) and ``pitch`` (down positive) from looking along the base's x axis."""
    rotation = rotation_z(yaw) @ rotation_y(pitch) @ BASE_FROM_OPTICAL
    return pose(rotation, np.array([x, y, z]))


@dataclass(frozen=True)
class PinholeCamera:
    """A rig camera: OpenCV intrinsics ``k`` for ``width`` x ``height`` and its mount."""

    name: str
    k: np.ndarray
    width: int
    height: int
    base_from_camera: np.ndarray
    frame_id: str = ""

    @property
    def optical_frame(self) -> str:
        return self.frame_id or f"{self.name}_optical_frame"


@dataclass(frozen=True)
class CircularTrajectory:
    """The base drives on a circle of ``radius`` about ``centre`` (counter-clockwise,
    heading along the tangent) at ``speed`` m/s, bobbing by ``bob`` metres."""

    centre: tuple[float, float] = (0.0, 0.0)
    radius: float = 1.5
    height: float = 1.2
    speed: float = 0.3
    phase: float = 0.0
    bob: float = 0.05

    @property
    def lap_time(self) -> float:
        """Seconds of one lap: the rig is back at its start (a closed loop)."""
        return 2.0 * math.pi * self.radius / self.speed

    def world_from_base(self, t: float) -> np.ndarray:
        """4x4 pose of the base in the world at time ``t`` seconds."""
        angle = self.phase + self.speed * t / self.radius
        x = self.centre[0] + self.radius * math.cos(angle)
        y = self.centre[1] + self.radius * math.sin(angle)
        z = self.height + self.bob * math.sin(2.0 * angle)
        return pose(rotation_z(angle + math.pi / 2), np.array([x, y, z]))


@dataclass(frozen=True)
class RenderedView:
    """One camera's image at time ``t`` with its exact geometry (metres, world frame)."""

    camera: str
    t: float
    image: np.ndarray = field(repr=False)
    depth: np.ndarray = field(repr=False)
    k: np.ndarray
    c2w: np.ndarray


class SyntheticRig:
    """Cameras on a moving base in a scene: ground-truth poses, intrinsics and renders."""

    def __init__(
        self,
        scene: Scene,
        cameras: list[PinholeCamera],
        trajectory: CircularTrajectory,
        cache_size: int = 64,
    ) -> None:
        names = [c.name for c in cameras]
        if not cameras or len(set(names)) != len(names):
            raise ValueError(f"give at least one camera, with unique names; got {names}")
        self.scene = scene
        self.cameras = {c.name: c for c in cameras}
        self.trajectory = trajectory
        self._cache: OrderedDict[tuple[str, float], RenderedView] = OrderedDict()
        self._cache_size = cache_size

    @property
    def names(self) -> list[str]:
        return list(self.cameras)

    def camera(self, name: str) -> PinholeCamera:
        try:
            return self.cameras[name]
        except KeyError:
            raise ValueError(f"unknown camera {name!r}; the rig has {self.names}") from None

    def intrinsics(self, name: str) -> np.ndarray:
        return np.array(self.camera(name).k, dtype=np.float64)

    def world_from_base(self, t: float) -> np.ndarray:
        return self.trajectory.world_from_base(t)

    def camera_pose(self, name: str, t: float) -> np.ndarray:
        """OpenCV camera-to-world 4x4 of camera ``name`` at time ``t``."""
        return self.world_from_base(t) @ self.camera(name).base_from_camera

    def render(self, name: str, t: float) -> RenderedView:
        """Image and exact z-depth of one camera at ``t`` (memoised, most recent first)."""
        key = (name, float(t))
        view = self._cache.get(key)
        if view is None:
            cam = self.camera(name)
            c2w = self.camera_pose(name, t)
            image, depth = self.scene.render(cam.k, c2w, cam.height, cam.width)
            view = RenderedView(name, float(t), image, depth, self.intrinsics(name), c2w)
            self._cache[key] = view
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return view

    def snapshot(self, t: float) -> list[RenderedView]:
        """Every camera at time ``t``, in rig order."""
        return [self.render(name, t) for name in self.cameras]


def default_scene(seed: int = 0) -> Scene:
    """A textured 10 x 10 x 3.5 m room (seen from inside) with boxes and a free panel."""
    return Scene(
        (
            Box((-5.0, -5.0, 0.0), (5.0, 5.0, 3.5), Texture(seed, 0.5), inside=True),
            Box((2.2, -0.8, 0.0), (3.2, 0.6, 1.4), Texture(seed + 1, 0.25)),
            Box((-3.4, 1.5, 0.0), (-2.4, 3.0, 2.0), Texture(seed + 2, 0.3)),
            Box((-0.9, -3.6, 0.0), (0.7, -2.7, 0.9), Texture(seed + 3, 0.2)),
            Box((0.8, 2.6, 0.5), (1.6, 3.4, 1.3), Texture(seed + 4, 0.15)),
            Plane(
                (-1.5, -4.2, 0.3),
                (1.0, 0.3, 0.0),
                (0.0, 0.0, 1.0),
                Texture(seed + 5, 0.2),
                u_range=(0.0, 2.0),
                v_range=(0.0, 1.8),
            ),
        )
    )


def repeated_texture_scene(seed: int = 0) -> Scene:
    """A look-alike room: the 10 x 10 x 3.5 m room of :func:`default_scene` whose walls,
    floor and ceiling repeat one 2 m texture tile, with four identical boxes placed with
    four-fold symmetry about the centre: places a quarter turn apart on a circle about the
    centre look alike without overlapping."""
    tile = Texture(seed, 0.5, period=4)
    box = Texture(seed + 1, 0.25)
    boxes = tuple(
        Box((x - 0.5, y - 0.5, 0.0), (x + 0.5, y + 0.5, 1.2), box)
        for x, y in ((3.2, 0.0), (0.0, 3.2), (-3.2, 0.0), (0.0, -3.2))
    )
    return Scene((Box((-5.0, -5.0, 0.0), (5.0, 5.0, 3.5), tile, inside=True), *boxes))


def default_rig(
    width: int = 640, height: int = 480, num_cameras: int = 4, seed: int = 0,
    scene: Scene | None = None,
) -> SyntheticRig:
    """Up to 4 cameras on a base driving a circle (a closed loop: ``lap_time``) in
    ``scene`` (default :func:`default_scene`).

    The cameras look forward and to the sides (yaw 0, 0, +35, -35 degrees, pitched 8
    degrees down), 0.25 m apart, with slightly different focal lengths and off-centre
    principal points, so the tests exercise every intrinsic parameter.
    """
    if not 1 <= num_cameras <= 4:
        raise ValueError(f"num_cameras must be 1..4, got {num_cameras}")
    specs = [
        ("cam_front_left", 0.60, 0.02, 0.125, 0.0, (0.03, 0.02)),
        ("cam_front_right", 0.62, -0.02, -0.125, 0.0, (-0.02, 0.03)),
        ("cam_left", 0.58, 0.10, 0.20, math.radians(35.0), (0.04, -0.03)),
        ("cam_right", 0.64, -0.10, -0.20, math.radians(-35.0), (-0.05, -0.02)),
    ][:num_cameras]
    cameras = []
    for name, focal, x, y, yaw, (ox, oy) in specs:
        f = focal * width
        k = np.array(
            [
                [f, 0.0, (width - 1) / 2 + ox * width],
                [0.0, f * 1.01, (height - 1) / 2 + oy * height],
                [0.0, 0.0, 1.0],
            ]
        )
        cameras.append(
            PinholeCamera(name, k, width, height, mount(x, y, 0.0, yaw, math.radians(8.0)))
        )
    return SyntheticRig(scene or default_scene(seed), cameras, CircularTrajectory())
