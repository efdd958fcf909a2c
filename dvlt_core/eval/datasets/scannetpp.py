"""ScanNet++ validation scenes (``nvs_sem_val``) in upstream's undistorted layout.

See :mod:`dvlt_core.training.data.scannetpp` for the layout; upstream config: up to 100 frames
sampled uniformly in file-name order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dvlt_core.eval.datasets.base import EvalDataset, RawFrames
from dvlt_core.training.data.scannetpp import scannetpp_scenes


class ScanNetppDataset(EvalDataset):
    """ScanNet++ scenes listed in ``split_file`` (relative to ``root``)."""

    name = "scannetpp"

    def __init__(self, root: str | Path, split_file: str = "nvs_sem_val.txt", **kwargs) -> None:
        kwargs.setdefault("max_frames", 100)
        super().__init__(**kwargs)
        self.scenes = scannetpp_scenes(root, split_file)

    def __len__(self) -> int:
        return len(self.scenes)

    def sequence_name(self, index: int) -> str:
        return self.scenes[index].name

    def num_frames(self, index: int) -> int:
        return len(self.scenes[index])

    def all_poses(self, index: int) -> np.ndarray:
        return self.scenes[index].poses()

    def read_frames(self, index: int, frames: Sequence[int]) -> RawFrames:
        loaded = [self.scenes[index].frame(f) for f in frames]
        return RawFrames(
            [f.image for f in loaded],
            [f.depth for f in loaded],
            np.stack([f.c2w for f in loaded]).astype(np.float32),
            np.stack([f.intrinsics for f in loaded]).astype(np.float32),
        )
