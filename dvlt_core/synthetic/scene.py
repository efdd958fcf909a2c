"""An analytic ray-caster for textured planes and axis-aligned boxes.

Rays are cast through pixel centres in the OpenCV/ROS convention (pixel (u, v) is centred
at (u, v)); ray directions have camera-frame z = 1, so the hit distance along a ray is the
exact z-depth. Pixels that hit nothing get depth 0 and black. Textures are procedural and
high-contrast (random saturated colours per cell plus a finer checker), so a learned model
has texture to match everywhere. Units are metres; the world is z-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
        [30, 30, 30],
        [240, 240, 240],
    ],
    dtype=np.float64,
)
_LIGHT = np.array([0.3, 0.5, 0.81]) / np.linalg.norm([0.3, 0.5, 0.81])


@dataclass(frozen=True)
class Texture:
    """Cells of ``cell`` metres with a pseudo-random palette colour each, overlaid with a
    checker of ``cell / subdivisions`` that darkens every other sub-cell. ``period`` > 0
    repeats the cell colours every ``period`` cells along both surface coordinates (a
    repeated texture: distinct places that look alike)."""

    seed: int = 0
    cell: float = 0.5
    subdivisions: int = 4
    period: int = 0

    def colour(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N, 3) float RGB in [0, 255] at surface coordinates (a, b) in metres."""
        i = np.floor(a / self.cell).astype(np.int64)
        j = np.floor(b / self.cell).astype(np.int64)
        if self.period > 0:
            i, j = i % self.period, j % self.period
        h = (i * 73856093 + j * 19349663 + self.seed * 83492791) & 0xFFFFFF
        h = (h * 2654435761) >> 20
        base = _PALETTE[np.abs(h) % len(_PALETTE)]
        fine = self.cell / self.subdivisions
        checker = (np.floor(a / fine) + np.floor(b / fine)).astype(np.int64) % 2
        return base * np.where(checker == 1, 0.55, 1.0)[:, None]


@dataclass(frozen=True)
class Plane:
    """A plane through ``origin`` spanned by the unit axes ``u_axis`` and ``v_axis``
    (orthonormalised here), optionally bounded to ``u_range`` x ``v_range`` metres."""

    origin: tuple[float, float, float]
    u_axis: tuple[float, float, float]
    v_axis: tuple[float, float, float]
    texture: Texture = field(default_factory=Texture)
    u_range: tuple[float, float] | None = None
    v_range: tuple[float, float] | None = None

    def _frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        u = np.asarray(self.u_axis, dtype=np.float64)
        u = u / np.linalg.norm(u)
        v = np.asarray(self.v_axis, dtype=np.float64)
        v = v - (v @ u) * u
        v = v / np.linalg.norm(v)
        return np.asarray(self.origin, dtype=np.float64), u, v, np.cross(u, v)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Hit parameter t (N,) along ``origin + t * dirs``; inf for no hit."""
        p0, _, _, n = self._frame()
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((p0 - origin) @ n) / denom
        t = np.where(np.isfinite(t) & (t > 1e-9), t, np.inf)
        if self.u_range is not None or self.v_range is not None:
            a, b = self._coords(origin, dirs, t)
            inside = np.ones(t.shape, dtype=bool)
            if self.u_range is not None:
                inside &= (a >= self.u_range[0]) & (a <= self.u_range[1])
            if self.v_range is not None:
                inside &= (b >= self.v_range[0]) & (b <= self.v_range[1])
            t = np.where(inside, t, np.inf)
        return t

    def _coords(
        self, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p0, u, v, _ = self._frame()
        rel = origin - p0
        with np.errstate(invalid="ignore"):
            return rel @ u + t * (dirs @ u), rel @ v + t * (dirs @ v)

    def shade(self, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(N, 3) colours of the hits ``t`` (all finite)."""
        a, b = self._coords(origin, dirs, t)
        n = self._frame()[3]
        return self.texture.colour(a, b) * (0.65 + 0.35 * abs(float(n @ _LIGHT)))


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``lo``..``hi``. ``inside=True`` renders it seen from within (a room)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    texture: Texture = field(default_factory=Texture)
    inside: bool = False

    def _slabs(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry and exit parameters, one axis at a time (contiguous 1-D arrays are much
        faster than (N, 3) reductions)."""
        count = len(dirs)
        t_near, t_far = np.full(count, -np.inf), np.full(count, np.inf)
        columns = np.ascontiguousarray(dirs.T)
        for axis in range(3):
            d = columns[axis]
            # A zero component never bounds the slab: a tiny one gives huge finite t instead.
            inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
            t0 = (self.lo[axis] - origin[axis]) * inv
            t1 = (self.hi[axis] - origin[axis]) * inv
            t_near = np.maximum(t_near, np.minimum(t0, t1))
            t_far = np.minimum(t_far, np.maximum(t0, t1))
        return t_near, t_far

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Hit parameter t (N,) along ``origin + t * dirs``; inf for no hit."""
        t_near, t_far = self._slabs(origin, dirs)
        hit = t_far >= np.maximum(t_near, 0.0)
        t = t_far if self.inside else t_near
        return np.where(hit & (t > 1e-9), t, np.inf)

    def shade(self, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(N, 3) colours of the hits ``t`` (all finite)."""
        point = origin + t[:, None] * dirs
        # The face hit is the one the point lies on: the axis closest to a slab boundary.
        gap = np.minimum(np.abs(point - np.asarray(self.lo)), np.abs(point - np.asarray(self.hi)))
        axis = gap.argmin(axis=1)
        # Surface coordinates: the two coordinates orthogonal to the face normal, offset per
        # face so that opposite faces do not carry the same pattern.
        other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        a = np.take_along_axis(point, other[:, :1], axis=1)[:, 0] + 7.3 * axis
        b = np.take_along_axis(point, other[:, 1:], axis=1)[:, 0]
        light = 0.65 + 0.35 * np.abs(_LIGHT[axis])
        return self.texture.colour(a, b) * light[:, None]


Primitive = Plane | Box


@dataclass(frozen=True)
class Scene:
    """A list of primitives; :meth:`render` returns the nearest hit per pixel."""

    primitives: tuple[Primitive, ...]

    def cast(
        self, origin: np.ndarray, dirs: np.ndarray, shade: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """Colours (N, 3) uint8 (None if not ``shade``) and hit parameters t (N,) (0 where
        nothing is hit) of rays ``origin + t * dirs``; with camera-frame z = 1 directions,
        t is the z-depth."""
        dirs = np.asarray(dirs, dtype=np.float64)
        origin = np.asarray(origin, dtype=np.float64)
        best = np.full(len(dirs), np.inf)
        which = np.full(len(dirs), -1, dtype=np.int64)
        norm2 = np.einsum("ij,ij->i", dirs, dirs)
        for i, primitive in enumerate(self.primitives):
            idx = _candidates(primitive, origin, dirs, norm2)
            if idx is None:
                t = primitive.intersect(origin, dirs)
                closer = t < best
                best = np.where(closer, t, best)
                which = np.where(closer, i, which)
            elif idx.size:
                t = primitive.intersect(origin, dirs[idx])
                closer = t < best[idx]
                best[idx[closer]] = t[closer]
                which[idx[closer]] = i
        depth = np.where(np.isfinite(best), best, 0.0)
        if not shade:
            return None, depth
        colour = np.zeros((len(dirs), 3))
        for i, primitive in enumerate(self.primitives):
            sel = np.nonzero(which == i)[0]
            if sel.size:
                colour[sel] = primitive.shade(origin, dirs[sel], best[sel])
        return np.clip(np.round(colour), 0, 255).astype(np.uint8), depth

    def render(
        self, intrinsics: np.ndarray, c2w: np.ndarray, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) and z-depth float64 (H, W) of a pinhole camera.

        ``intrinsics`` is 3x3 in the OpenCV convention, ``c2w`` an OpenCV camera-to-world
        4x4 (x right, y down, z forward) in scene metres.
        """
        colour, depth = self._render(intrinsics, c2w, height, width, shade=True)
        return colour.reshape(height, width, 3), depth

    def depth(self, intrinsics: np.ndarray, c2w: np.ndarray, height: int, width: int) -> np.ndarray:
        """Only the z-depth float64 (H, W) of :meth:`render` (0 where nothing is hit)."""
        return self._render(intrinsics, c2w, height, width, shade=False)[1]

    def _render(
        self, intrinsics: np.ndarray, c2w: np.ndarray, height: int, width: int, shade: bool
    ) -> tuple[np.ndarray | None, np.ndarray]:
        dirs_cam = camera_rays(intrinsics, height, width)
        c2w = np.asarray(c2w, dtype=np.float64)
        dirs = dirs_cam.reshape(-1, 3) @ c2w[:3, :3].T
        colour, depth = self.cast(c2w[:3, 3], dirs, shade=shade)
        return colour, depth.reshape(height, width)


def _candidates(
    primitive: Primitive, origin: np.ndarray, dirs: np.ndarray, norm2: np.ndarray
) -> np.ndarray | None:
    """Indices of the rays that pass through the bounding sphere of a bounded primitive
    (None: test every ray). Culling keeps small objects cheap in large images."""
    if isinstance(primitive, Box) and not primitive.inside:
        lo, hi = np.asarray(primitive.lo, float), np.asarray(primitive.hi, float)
        centre, radius = (lo + hi) / 2, np.linalg.norm(hi - lo) / 2
    elif isinstance(primitive, Plane) and primitive.u_range and primitive.v_range:
        p0, u, v, _ = primitive._frame()
        (a0, a1), (b0, b1) = primitive.u_range, primitive.v_range
        centre = p0 + u * (a0 + a1) / 2 + v * (b0 + b1) / 2
        radius = np.hypot(a1 - a0, b1 - b0) / 2
    else:
        return None
    rel = centre - origin
    if rel @ rel <= radius * radius:
        return None
    proj = dirs @ rel
    miss2 = rel @ rel - proj * proj / norm2
    return np.nonzero((proj > 0) & (miss2 <= radius * radius * 1.0001))[0]


def camera_rays(intrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions ``K^-1 [u, v, 1]`` (z = 1) at pixel centres."""
    k_inv = np.linalg.inv(np.asarray(intrinsics, dtype=np.float64))
    v, u = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    return pix @ k_inv.T
