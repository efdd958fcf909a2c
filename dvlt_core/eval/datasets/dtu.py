"""DTU (Spann3R's MVSNet-preprocessed release), as upstream evaluates it.

::

    <root>/scan<N>/images/00000000.jpg        RGB
    <root>/scan<N>/cams/00000000_cam.txt      "extrinsic" + 4x4 world-to-camera, "intrinsic" + 3x3
    <root>/scan<N>/depths/00000000.npy        depth in millimetres
    <root>/scan<N>/binary_masks/00000000.png  foreground mask

A scan is a sequence and its views are frames (view ids from the image names of the first
scan). Depth is kept in millimetres (as are the camera translations) and multiplied by the
foreground mask after a 10x10 erosion; all views are used with the middle view first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dvlt_core.eval.datasets.base import EvalDataset, RawFrames, cv2_nearest
from dvlt_core.training.data.scene import read_rgb

REQUIRED_DIRS = ("images", "cams", "depths", "binary_masks")
ERODE_KERNEL = 10


def read_mvsnet_cam(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 intrinsics, 4x4 world-to-camera) from an MVSNet ``*_cam.txt``."""
    words = Path(path).read_text().split()
    extrinsic = np.array(words[1:17], dtype=np.float32).reshape(4, 4)
    intrinsic = np.array(words[18:27], dtype=np.float32).reshape(3, 3)
    return intrinsic, extrinsic


def erode(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary erosion with a ``size``x``size`` box anchored at its centre (OpenCV's default
    anchor ``size // 2``); pixels outside the image do not erode."""
    a = size // 2
    padded = np.pad(mask, ((a, size - 1 - a), (a, size - 1 - a)), constant_values=1.0)
    out = np.ones_like(mask)
    for dy in range(size):
        for dx in range(size):
            out = np.minimum(out, padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]])
    return out


class DTUDataset(EvalDataset):
    """DTU scans; upstream config: ``view_ranking="middle_first"``, all views."""

    name = "dtu"

    def __init__(self, root: str | Path, **kwargs) -> None:
        kwargs.setdefault("view_ranking", "middle_first")
        super().__init__(**kwargs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"DTU root {self.root} does not exist")
        self.scans = sorted(p.name for p in self.root.iterdir()
                            if p.is_dir() and all((p / d).is_dir() for d in REQUIRED_DIRS))
        if not self.scans:
            raise FileNotFoundError(f"no scans with {REQUIRED_DIRS} under {self.root}")
        images = sorted((self.root / self.scans[0] / "images").glob("*.jpg"))
        self.view_ids = sorted(int(p.stem) for p in images)

    def __len__(self) -> int:
        return len(self.scans)

    def sequence_name(self, index: int) -> str:
        return self.scans[index]

    def num_frames(self, index: int) -> int:
        return len(self.view_ids)

    def read_frames(self, index: int, frames: Sequence[int]) -> RawFrames:
        scan = self.root / self.scans[index]
        images, depths, c2w, ks = [], [], [], []
        for f in frames:
            vid = f"{self.view_ids[f]:08d}"
            images.append(read_rgb(scan / "images" / f"{vid}.jpg"))
            k, w2c = read_mvsnet_cam(scan / "cams" / f"{vid}_cam.txt")
            ks.append(k)
            c2w.append(np.linalg.inv(w2c.astype(np.float64)).astype(np.float32))
            depth = np.load(scan / "depths" / f"{vid}.npy").astype(np.float32)
            with Image.open(scan / "binary_masks" / f"{vid}.png") as m:
                mask = np.asarray(m, dtype=np.float32) / 255.0
            if mask.ndim == 3:
                mask = mask[..., 0]
            mask = np.where(mask > 0.5, 1.0, np.where(mask < 0.5, 0.0, mask)).astype(np.float32)
            mask = erode(cv2_nearest(mask, *depth.shape), ERODE_KERNEL)
            depths.append(depth * mask)
        return RawFrames(images, depths, np.stack(c2w), np.stack(ks))
