"""Microsoft 7-Scenes with the projected (SimpleRecon) pseudo-GT depth, test split.

::

    <root>/<scene>/seq-XX/frame-000000.color.png
    <root>/<scene>/seq-XX/frame-000000.depth.proj.png    uint16 millimetres ("proj" source)
    <root>/<scene>/seq-XX/frame-000000.depth.png         uint16 millimetres ("raw" source)
    <root>/<scene>/seq-XX/frame-000000.pose.txt          4x4 camera-to-world, metres

Intrinsics are fixed (focal 525 px, principal point at the image centre of 640x480). Depth
outside [0.1, 10] m is invalid. Upstream config: index ranking, every 11th frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dvlt_core.eval.datasets.base import EvalDataset, RawFrames
from dvlt_core.training.data.scene import intrinsics_matrix, read_png_u16, read_rgb

FOCAL = 525.0
WIDTH, HEIGHT = 640, 480
SPLITS = {
    "train": {"chess": [1, 2, 4, 6], "fire": [1, 2], "heads": [2],
              "office": [1, 3, 4, 5, 8, 10], "pumpkin": [2, 3, 6, 8],
              "redkitchen": [1, 2, 5, 7, 8, 11, 13], "stairs": [2, 3, 5, 6]},
    "test": {"chess": [3, 5], "fire": [3, 4], "heads": [1], "office": [2, 6, 7, 9],
             "pumpkin": [1, 7], "redkitchen": [3, 4, 6, 12, 14], "stairs": [1, 4]},
}


class SevenScenesDataset(EvalDataset):
    """7-Scenes sequences of ``split``; ``depth_source`` ``proj`` (default) or ``raw``."""

    name = "sevenscenes"

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        depth_source: str = "proj",
        min_depth: float = 0.1,
        max_depth: float = 10.0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("view_sampling", "every_11")
        super().__init__(**kwargs)
        if split not in SPLITS or depth_source not in ("proj", "raw"):
            raise ValueError("split must be train/test and depth_source proj/raw")
        self.root = Path(root)
        self.suffix = "depth.proj.png" if depth_source == "proj" else "depth.png"
        self.min_depth, self.max_scene_depth = min_depth, max_depth
        self.sequences = []
        for scene in sorted(p.name for p in self.root.iterdir() if p.is_dir()):
            for number in SPLITS[split].get(scene, []):
                seq = self.root / scene / f"seq-{number:02d}"
                if seq.is_dir():
                    self.sequences.append((f"{scene}_{seq.name}", seq,
                                           len(list(seq.glob("*.color.png")))))
        if not self.sequences:
            raise FileNotFoundError(f"no 7-Scenes {split} sequences under {self.root}")

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_name(self, index: int) -> str:
        return self.sequences[index][0]

    def num_frames(self, index: int) -> int:
        return self.sequences[index][2]

    def read_frames(self, index: int, frames: Sequence[int]) -> RawFrames:
        seq = self.sequences[index][1]
        images, depths, c2w = [], [], []
        for f in frames:
            stem = seq / f"frame-{f:06d}"
            depth = read_png_u16(f"{stem}.{self.suffix}").astype(np.float32) / 1000.0
            depth[(depth > self.max_scene_depth) | (depth < self.min_depth)] = 0.0
            image = read_rgb(f"{stem}.color.png")
            if image.shape[:2] != depth.shape:
                image = np.asarray(Image.fromarray(image).resize(
                    (depth.shape[1], depth.shape[0]), Image.Resampling.LANCZOS))
            images.append(image)
            depths.append(depth)
            c2w.append(np.loadtxt(f"{stem}.pose.txt", dtype=np.float32).reshape(4, 4))
        k = intrinsics_matrix(FOCAL, FOCAL, WIDTH / 2, HEIGHT / 2).astype(np.float32)
        return RawFrames(images, depths, np.stack(c2w), np.stack([k] * len(frames)))
