"""Held-out synthetic scenes as a benchmark (no download): exact depth and poses.

Each sequence takes frames ``0, stride, 2·stride, …`` of a generated scene (the training
generator with seeds disjoint from training's default), preprocessed like the training views
(normalised to the first view, pixel-centre world points). Used by the learning test and as a
smoke benchmark for ``dvlt-eval --benchmark synthetic``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvlt_core.eval.datasets.base import EvalSequence
from dvlt_core.training.data.synthetic import SyntheticSpec, synthetic_scenes
from dvlt_core.training.data.views import frames_sample

HELD_OUT_SEED = 100_000


@dataclass
class SyntheticEvalDataset:
    """``num_scenes`` generated scenes of ``num_views`` frames at ``image_size`` px."""

    num_scenes: int = 8
    num_views: int = 3
    stride: int = 1
    image_size: int = 56
    seed: int = HELD_OUT_SEED
    name: str = "synthetic"

    def __post_init__(self) -> None:
        frames = (self.num_views - 1) * self.stride + 1
        spec = SyntheticSpec(width=self.image_size + 8, height=self.image_size + 8,
                             num_frames=frames)
        self.scenes = synthetic_scenes(self.num_scenes, self.seed, spec)

    def __len__(self) -> int:
        return self.num_scenes

    def sequence(self, index: int) -> EvalSequence:
        ids = [i * self.stride for i in range(self.num_views)]
        s = frames_sample(self.scenes[index], ids, (self.image_size, self.image_size))
        images = (s["images"].transpose(0, 2, 3, 1) * 255.0).round().astype("uint8")
        return EvalSequence(
            name=f"{self.name}_{s['scene']}",
            images=images,
            depths=s["depths"],
            extrinsics_c2w=s["extrinsics_c2w"],
            intrinsics=s["intrinsics"],
            world_points=s["world_points"],
            point_masks=s["point_masks"],
        )

    def __iter__(self):
        return (self.sequence(i) for i in range(len(self)))
