"""ScanNet++ in upstream's preprocessed (undistorted DSLR) layout, for training and evaluation.

::

    <root>/<split>.txt                                  scene ids, one per line
    <root>/scannetpp_undistort/<scene>/
        undistorted_images/<name>.JPG
        undistorted_depth/<name>.png                    float16 bit pattern in a 16-bit PNG (m)
        nerfstudio/transforms_undistorted.json          PINHOLE fl_x, fl_y, cx, cy, w, h and
                                                        frames / test_frames with OpenGL c2w

Frames are ``frames + test_frames`` sorted by file name. The nerfstudio poses are converted as
upstream does: negate row 2, swap rows 0 and 1 (the world axes), then negate the camera y and z
axes (OpenGL → OpenCV).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dvlt_core.training.data.scene import (
    Frame,
    Scene,
    intrinsics_matrix,
    read_png_u16,
    read_rgb,
    sanitize_depth,
    write_png_u16,
)

IMAGES_DIR = "undistorted_images"
DEPTH_DIR = "undistorted_depth"
TRANSFORMS = "nerfstudio/transforms_undistorted.json"


def nerfstudio_to_opencv(transforms: np.ndarray) -> np.ndarray:
    """(N, 4, 4) nerfstudio ``transform_matrix`` → OpenCV c2w, exactly as upstream converts them."""
    poses = np.array(transforms, dtype=np.float32)
    poses[:, 2, :] *= -1
    poses = poses[:, [1, 0, 2, 3], :]
    poses[:, 0:3, 1:3] *= -1
    return poses.astype(np.float64)


def read_float16_png(path: str | Path) -> np.ndarray:
    """Depth stored as the bit pattern of float16 values in a 16-bit PNG → float32 metres."""
    depth = read_png_u16(path).view(np.float16).astype(np.float32)
    return sanitize_depth(depth)


def write_float16_png(path: str | Path, depth: np.ndarray) -> None:
    """Inverse of :func:`read_float16_png` (the layout upstream's preprocessing writes)."""
    write_png_u16(path, np.ascontiguousarray(depth.astype(np.float16)).view(np.uint16))


class ScanNetppScene(Scene):
    """One undistorted ScanNet++ DSLR scene."""

    def __init__(self, scene_dir: str | Path, max_depth: float | None = None) -> None:
        self.path = Path(scene_dir)
        transforms_path = self.path / TRANSFORMS
        if not transforms_path.is_file():
            raise FileNotFoundError(
                f"{transforms_path} not found: run upstream's ScanNet++ preprocessing "
                "(docs/training.md, 'ScanNet++') to create the undistorted layout"
            )
        meta = json.loads(transforms_path.read_text())
        frames = sorted(meta["frames"] + meta.get("test_frames", []),
                        key=lambda f: f["file_path"])
        self.name = self.path.name
        self.files = [f["file_path"] for f in frames]
        self._poses = nerfstudio_to_opencv(np.array([f["transform_matrix"] for f in frames]))
        self._intrinsics = intrinsics_matrix(
            float(meta["fl_x"]), float(meta["fl_y"]), float(meta["cx"]), float(meta["cy"])
        )
        self.max_depth = max_depth

    def __len__(self) -> int:
        return len(self.files)

    def poses(self) -> np.ndarray:
        return self._poses.copy()

    def frame(self, index: int) -> Frame:
        name = self.files[index]
        image = read_rgb(self.path / IMAGES_DIR / name)
        depth = read_float16_png(self.path / DEPTH_DIR / Path(name).with_suffix(".png"))
        if self.max_depth is not None:
            depth = sanitize_depth(depth, self.max_depth)
        return Frame(image, depth, self._poses[index], self._intrinsics.copy())


def scannetpp_scenes(
    root: str | Path, split_file: str | Path | None = None, max_depth: float | None = None
) -> list[ScanNetppScene]:
    """The scenes of ``root/scannetpp_undistort`` listed in ``split_file`` (default: all)."""
    root = Path(root)
    base = root / "scannetpp_undistort"
    if not base.is_dir():
        raise FileNotFoundError(
            f"{base} not found: point the ScanNet++ source at the folder holding "
            "scannetpp_undistort/ and the split files (upstream's preprocessing output)"
        )
    if split_file is not None:
        split_path = Path(split_file)
        if not split_path.is_absolute():
            split_path = root / split_path
        names = [line.strip() for line in split_path.read_text().splitlines() if line.strip()]
    else:
        names = sorted(p.name for p in base.iterdir() if p.is_dir())
    return [ScanNetppScene(base / name, max_depth) for name in names]
