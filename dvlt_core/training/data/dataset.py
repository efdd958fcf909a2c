"""The training ``Dataset`` (indexed by :class:`SampleRequest`) and its collate function."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dvlt_core.training.data.sampler import SampleRequest
from dvlt_core.training.data.scene import Scene
from dvlt_core.training.data.views import ViewSampling, build_sample, target_hw

TENSOR_KEYS = ("images", "depths", "extrinsics_c2w", "intrinsics", "world_points", "point_masks")


class MultiViewDataset(Dataset):
    """Builds the sample a :class:`SampleRequest` names, deterministically from its seed."""

    def __init__(
        self,
        scenes: Sequence[Scene],
        image_size: int,
        patch_size: int = 14,
        sampling: ViewSampling | None = None,
    ) -> None:
        if not scenes:
            raise ValueError("no training scenes; check the data.sources of the config")
        self.scenes = list(scenes)
        self.image_size = image_size
        self.patch_size = patch_size
        self.sampling = sampling or ViewSampling()

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, request: SampleRequest) -> dict:
        rng = np.random.default_rng(request.seed)
        hw = target_hw(self.image_size, self.patch_size, request.aspect_ratio)
        sample = build_sample(self.scenes[request.scene], request.num_views, hw, self.sampling, rng)
        out: dict = {k: torch.from_numpy(np.ascontiguousarray(sample[k])) for k in TENSOR_KEYS}
        out["scale_factor"] = torch.tensor(sample["scale_factor"], dtype=torch.float32)
        out["is_synthetic"] = torch.tensor([sample["is_synthetic"]])
        out["scene"] = sample["scene"]
        return out


def collate_samples(samples: Sequence[dict]) -> dict[str, Tensor | list[str]]:
    """Stack samples that share view count and size (as one token-budget batch does)."""
    batch: dict[str, Tensor | list[str]] = {
        k: torch.stack([s[k] for s in samples]) for k in (*TENSOR_KEYS, "scale_factor",
                                                           "is_synthetic")
    }
    batch["scene"] = [s["scene"] for s in samples]
    return batch
