"""ETH3D high-res multi-view (undistorted DSLR), after upstream's depth undistortion.

::

    <root>/<scene>/dslr_calibration_undistorted/cameras.txt   COLMAP PINHOLE cameras
    <root>/<scene>/dslr_calibration_undistorted/images.txt    COLMAP poses (world-to-camera)
    <root>/<scene>/images/dslr_images_undistorted/<name>.JPG
    <root>/<scene>/ground_truth_depth/dslr_images_undistorted/<name>.exr

Frames need both image and depth, sorted by name; upstream config: up to 100 frames sampled
uniformly. Images are used as stored (no portrait rotation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dvlt_core.eval.datasets.base import EvalDataset, RawFrames
from dvlt_core.eval.datasets.exr import read_exr
from dvlt_core.geometry import quaternion_to_rotation
from dvlt_core.training.data.scene import intrinsics_matrix, read_rgb

CALIBRATION = "dslr_calibration_undistorted"
IMAGES = "images/dslr_images_undistorted"
DEPTHS = "ground_truth_depth/dslr_images_undistorted"


def read_colmap_cameras(path: Path) -> dict[int, tuple[float, float, float, float]]:
    """camera id → (fx, fy, cx, cy) of a COLMAP ``cameras.txt`` (PINHOLE parameters)."""
    cameras = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        cameras[int(parts[0])] = tuple(float(v) for v in parts[4:8])
    return cameras


def read_colmap_images(path: Path) -> list[tuple[str, np.ndarray, int]]:
    """(file name, 4x4 c2w, camera id) per image of a COLMAP ``images.txt``."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    out = []
    for line in lines[0::2]:
        parts = line.split()
        if len(parts) < 10:
            continue
        qw, qx, qy, qz, tx, ty, tz = (float(v) for v in parts[1:8])
        rot = quaternion_to_rotation(torch.tensor([qx, qy, qz, qw], dtype=torch.float64))
        w2c = np.eye(4)
        w2c[:3, :3] = rot.numpy()
        w2c[:3, 3] = (tx, ty, tz)
        out.append((Path(parts[9]).name, np.linalg.inv(w2c), int(parts[8])))
    return out


class ETH3DDataset(EvalDataset):
    """ETH3D scenes; upstream config: ``max_frames=100``, index ranking, uniform sampling."""

    name = "eth3d"

    def __init__(self, root: str | Path, **kwargs) -> None:
        kwargs.setdefault("max_frames", 100)
        super().__init__(**kwargs)
        self.root = Path(root)
        scenes = sorted(p.parent for p in self.root.glob(f"*/{CALIBRATION}"))
        if not scenes:
            raise FileNotFoundError(f"no ETH3D scenes (*/{CALIBRATION}) under {self.root}")
        self.scenes = []
        for scene in scenes:
            cams = read_colmap_cameras(scene / CALIBRATION / "cameras.txt")
            frames = [
                (name, c2w, cams[cam]) for name, c2w, cam in
                read_colmap_images(scene / CALIBRATION / "images.txt")
                if (scene / IMAGES / name).is_file()
                and (scene / DEPTHS / Path(name).with_suffix(".exr")).is_file()
            ]
            self.scenes.append((scene, sorted(frames, key=lambda f: f[0])))

    def __len__(self) -> int:
        return len(self.scenes)

    def sequence_name(self, index: int) -> str:
        return self.scenes[index][0].name

    def num_frames(self, index: int) -> int:
        return len(self.scenes[index][1])

    def read_frames(self, index: int, frames: Sequence[int]) -> RawFrames:
        scene, records = self.scenes[index]
        images, depths, c2w, ks = [], [], [], []
        for f in frames:
            name, pose, (fx, fy, cx, cy) = records[f]
            images.append(read_rgb(scene / IMAGES / name))
            depth = read_exr(scene / DEPTHS / Path(name).with_suffix(".exr"))
            depths.append(np.where(np.isfinite(depth), depth, 0.0).astype(np.float32))
            c2w.append(pose.astype(np.float32))
            ks.append(intrinsics_matrix(fx, fy, cx, cy).astype(np.float32))
        return RawFrames(images, depths, np.stack(c2w), np.stack(ks))
