"""The scene interface every training source implements, and shared image/depth readers.

Conventions (the same as the model's, docs/architecture.md §14.2): images are RGB uint8
(H, W, 3); depth is float32 z-depth in metres with 0 for invalid pixels; poses are OpenCV
camera-to-world 4x4 (x right, y down, z forward); intrinsics are 3x3 in pixels with pixel
(u, v) covering [u, u+1) x [v, v+1), so its centre is (u + 0.5, v + 0.5) (the COLMAP /
nerfstudio convention; a ROS ``CameraInfo`` or OpenCV matrix has cx, cy half a pixel smaller).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Frame:
    """One posed RGB-D frame."""

    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, 0 = invalid
    c2w: np.ndarray  # (4, 4) float64, OpenCV camera-to-world
    intrinsics: np.ndarray  # (3, 3) float64, pixel centres at +0.5


class Scene(ABC):
    """A sequence of posed RGB-D frames (one scene or recording)."""

    name: str
    is_synthetic: bool = False

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames."""

    @abstractmethod
    def frame(self, index: int) -> Frame:
        """Frame ``index`` (0 ≤ index < len(self))."""

    @abstractmethod
    def poses(self) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses of all frames, without reading images."""


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) from any image file PIL reads (alpha composited on white)."""
    with Image.open(path) as img:
        if img.mode == "RGBA":
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_png_u16(path: str | Path) -> np.ndarray:
    """A 16-bit single-channel PNG as uint16 (H, W)."""
    with Image.open(path) as img:
        data = np.asarray(img)
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel 16-bit PNG, got shape {data.shape}")
    return data.astype(np.uint16)


def write_png_u16(path: str | Path, data: np.ndarray) -> None:
    """Write uint16 (H, W) as a 16-bit PNG."""
    Image.fromarray(np.ascontiguousarray(data, dtype=np.uint16)).save(path)


def sanitize_depth(depth: np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """float32 copy with non-finite, negative (and, if given, > ``max_depth``) values set to 0."""
    depth = np.array(depth, dtype=np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    if max_depth is not None:
        depth[depth > max_depth] = 0.0
    return depth


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 float64 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
