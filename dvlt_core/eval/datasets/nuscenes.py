"""NuScenes CAM_FRONT keyframes with sparse LiDAR depth, one ``scene.h5`` per scene.

::

    <root>/<split>/<scene>/scene.h5
        images/<i>       JPEG bytes of frame i
        depths           (N, H, W) float32, 0 = no LiDAR return
        extrinsics_c2w   (N, 4, 4)
        intrinsics       (N, 3, 3)

Poses are re-expressed relative to frame 0 of the scene. Upstream config: the 50 evaluation
scenes, up to 50 frames sampled uniformly, depth beyond 100 m invalid. Reading needs ``h5py``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dvlt_core.eval.datasets.base import EvalDataset, RawFrames

EVAL_SCENES = tuple(f"scene-{n:04d}" for n in (
    13, 16, 35, 39, 94, 97, 100, 103, 106, 109, 268, 271, 274, 277, 330, 344, 519, 522, 552,
    555, 558, 561, 564, 626, 630, 634, 637, 771, 778, 782, 794, 797, 800, 905, 908, 911, 914,
    917, 921, 924, 927, 930, 963, 968, 972, 1061, 1064, 1067, 1070, 1073,
))


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("the NuScenes loader needs h5py: pip install h5py") from exc
    return h5py


class NuScenesDataset(EvalDataset):
    """NuScenes scenes; ``scenes`` is ``"eval"`` (the 50 upstream scenes), ``"all"`` or a list."""

    name = "nuscenes"

    def __init__(
        self,
        root: str | Path,
        split: str | None = "trainval",
        scenes: str | Sequence[str] = "eval",
        **kwargs,
    ) -> None:
        kwargs.setdefault("max_frames", 50)
        kwargs.setdefault("max_depth", 100.0)
        super().__init__(**kwargs)
        base = Path(root) / split if split else Path(root)
        if scenes == "eval":
            names = list(EVAL_SCENES)
        elif scenes == "all":
            names = sorted(p.name for p in base.iterdir() if (p / "scene.h5").is_file())
        else:
            names = list(scenes)
        paths = [(n, base / n / "scene.h5") for n in names]
        self.files = [(n, p) for n, p in paths if p.is_file()]
        if not self.files:
            raise FileNotFoundError(f"no NuScenes scene.h5 files under {base}")

    def __len__(self) -> int:
        return len(self.files)

    def sequence_name(self, index: int) -> str:
        return self.files[index][0]

    def num_frames(self, index: int) -> int:
        with _h5py().File(self.files[index][1], "r") as f:
            return int(f["depths"].shape[0])

    def read_frames(self, index: int, frames: Sequence[int]) -> RawFrames:
        frames = list(frames)
        with _h5py().File(self.files[index][1], "r") as f:
            images = []
            for i in frames:
                with Image.open(io.BytesIO(f[f"images/{i}"][()].tobytes())) as img:
                    images.append(np.asarray(img.convert("RGB")))
            depths = [np.asarray(f["depths"][i], dtype=np.float32) for i in frames]
            c2w = np.asarray(f["extrinsics_c2w"][:], dtype=np.float64)
            first_inv = np.linalg.inv(c2w[0])
            poses = np.einsum("ij,njk->nik", first_inv, c2w[frames]).astype(np.float32)
            ks = np.asarray(f["intrinsics"][:], dtype=np.float32)[frames]
        return RawFrames(images, depths, poses, ks)
