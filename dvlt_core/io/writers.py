"""Writing plain arrays: binary PLY point clouds, PNG previews and trajectories in the TUM
format. Every file is written atomically. A whole :class:`~dvlt_core.result.Reconstruction`
(NPZ, cameras as JSON) is written by :mod:`dvlt_core.result_writers`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dvlt_core.atomic import write_atomic
from dvlt_core.geometry import rotation_to_quaternion

# Anchor colours of the viridis colour map at 0, 1/8, ..., 1 (linearly interpolated between).
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


def colorize(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Map ``values`` (h, w) to viridis RGB uint8, stretched between the 2nd and 98th
    percentiles of the masked values; pixels outside ``mask`` are black."""
    mask = np.isfinite(values) if mask is None else mask & np.isfinite(values)
    out = np.zeros((*values.shape, 3), dtype=np.uint8)
    if not mask.any():
        return out
    lo, hi = np.percentile(values[mask], [2.0, 98.0])
    scaled = np.clip((values[mask] - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    position = scaled * (len(_VIRIDIS) - 1)
    index = np.minimum(position.astype(int), len(_VIRIDIS) - 2)
    frac = (position - index)[:, None]
    colors = _VIRIDIS[index] * (1.0 - frac) + _VIRIDIS[index + 1] * frac
    out[mask] = colors.round().astype(np.uint8)
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image (h, w, 3) as PNG."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    write_atomic(path, lambda p: image.save(p, format="PNG"))


def write_depth_preview(path: str | Path, depth: np.ndarray, valid: np.ndarray) -> None:
    """Colour-mapped inverse depth (near = bright), black where invalid or non-positive."""
    mask = valid & (depth > 0)
    inverse = np.zeros_like(depth, dtype=np.float64)
    inverse[mask] = 1.0 / depth[mask]
    write_png(path, colorize(inverse, mask))


def write_confidence_preview(path: str | Path, confidence: np.ndarray, valid: np.ndarray) -> None:
    """Colour-mapped log confidence (confident = bright), black where invalid."""
    mask = valid & (confidence > 0)
    logc = np.zeros_like(confidence, dtype=np.float64)
    logc[mask] = np.log(confidence[mask])
    write_png(path, colorize(logc, mask))


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Binary little-endian PLY with float32 x, y, z and uint8 red, green, blue per vertex."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(points) != len(colors):
        raise ValueError(f"{len(points)} points but {len(colors)} colours")
    vertex = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    data = np.empty(len(points), dtype=vertex)
    for i, axis in enumerate("xyz"):
        data[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        data[channel] = colors[:, i]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by dvlt_core\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    write_atomic(path, lambda p: p.write_bytes(header.encode("ascii") + data.tobytes()))


def write_tum(
    path: str | Path,
    timestamps: Sequence[float],
    c2w: np.ndarray,
    valid: Sequence[bool] | None = None,
) -> None:
    """TUM trajectory: one ``timestamp tx ty tz qx qy qz qw`` line per camera-to-world pose.

    Poses flagged invalid in ``valid`` (failed fits) or not finite are left out.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    valid = [True] * len(c2w) if valid is None else list(valid)
    lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world, OpenCV camera axes)\n"]
    for t, pose, ok in zip(timestamps, c2w, valid, strict=True):
        if not (ok and np.isfinite(pose).all()):
            continue
        q = rotation_to_quaternion(np.ascontiguousarray(pose[:3, :3]))
        values = [*pose[:3, 3], *q]
        lines.append(f"{t:.6f} " + " ".join(f"{v:.9g}" for v in values) + "\n")
    write_atomic(path, lambda p: p.write_text("".join(lines)))
