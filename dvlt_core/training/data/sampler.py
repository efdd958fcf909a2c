"""Upstream's token-budget batching, resumable by position.

Every batch draws a view count ``n`` uniformly from ``images_per_element`` and an aspect ratio
uniformly from ``aspect_ratios`` (rounded to 2 decimals); all elements of the batch share them.
The batch size starts at ``images_per_batch // n`` and, with ``tokens_per_batch`` set, becomes
``tokens_per_batch // (n · tokens_per_image)`` whenever that is smaller (to fit) or larger (to
fill the budget), where ``tokens_per_image = (image_size/p) · (H/p)`` for the batch's height H.

Scenes are shuffled per epoch (torch generator seeded ``seed + epoch``); batch parameters and
per-element seeds come from ``random.Random(seed + epoch)``, identical on every rank, so all
ranks run the same ``n`` and image size each step. Under data parallelism each rank takes a
strided share of the (padded) permutation. Iteration starts after ``start`` batches (set it to
the number of batches the training loop consumed): the skipped batches are regenerated, not
loaded, so resuming is exact however far a ``DataLoader`` had prefetched.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

from dvlt_core.training.data.views import target_hw


@dataclass(frozen=True)
class SampleRequest:
    """What one batch element loads: scene, view count, aspect ratio and its RNG seed."""

    scene: int
    num_views: int
    aspect_ratio: float
    seed: int


class TokenBudgetBatchSampler(Sampler[list[SampleRequest]]):
    """Yields lists of :class:`SampleRequest` (see the module docstring); infinite."""

    def __init__(
        self,
        num_scenes: int,
        *,
        images_per_batch: int,
        images_per_element: tuple[int, int],
        tokens_per_batch: int | None = None,
        aspect_ratios: tuple[float, float] = (0.33, 1.0),
        image_size: int = 504,
        patch_size: int = 14,
        seed: int = 42,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        min_epoch_length: int = 1000,
    ) -> None:
        lo, hi = images_per_element
        if num_scenes < 1:
            raise ValueError("the training set has no scenes")
        if not 1 <= lo <= hi:
            raise ValueError(f"images_per_element must be [min, max] with 1 <= min <= max, "
                             f"got {images_per_element}")
        if hi > images_per_batch:
            raise ValueError(f"images_per_element max {hi} exceeds images_per_batch "
                             f"{images_per_batch}")
        if not 0 < aspect_ratios[0] <= aspect_ratios[1]:
            raise ValueError(f"aspect_ratios must be [min, max] with 0 < min <= max, "
                             f"got {aspect_ratios}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.num_scenes = num_scenes
        self.images_per_batch = images_per_batch
        self.images_per_element = (lo, hi)
        self.tokens_per_batch = tokens_per_batch
        self.aspect_ratios = tuple(aspect_ratios)
        self.image_size = image_size
        self.patch_size = patch_size
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        # Short datasets are repeated so an epoch has a useful length (upstream: MIN_LEN 1000).
        self.epoch_length = max(num_scenes, min_epoch_length)
        self.start = 0

    # ---- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The position to resume from: how many batches the training loop has consumed."""
        return {"start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = int(state["start"])

    # ---- batch parameters --------------------------------------------------------------

    def batch_parameters(self, rng: random.Random) -> tuple[int, float, int]:
        """(views per element, aspect ratio, batch size) of the next batch."""
        n = rng.randint(*self.images_per_element)
        aspect = round(rng.uniform(*self.aspect_ratios), 2)
        batch = max(1, self.images_per_batch // n)
        if self.tokens_per_batch is not None:
            h, w = target_hw(self.image_size, self.patch_size, aspect)
            per_image = (w // self.patch_size) * (h // self.patch_size)
            batch = max(1, self.tokens_per_batch // (n * per_image))
        return n, aspect, batch

    def _epoch_indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        base = torch.arange(self.epoch_length) * self.num_scenes // self.epoch_length
        if self.shuffle:
            base = base[torch.randperm(self.epoch_length, generator=generator)]
        indices = base.tolist()
        per_rank = -(-len(indices) // self.num_replicas)
        indices += indices[: per_rank * self.num_replicas - len(indices)]
        return indices[self.rank :: self.num_replicas]

    def _epoch_batches(self, epoch: int) -> Iterator[list[SampleRequest]]:
        indices = self._epoch_indices(epoch)
        rng = random.Random(self.seed + epoch)
        pos = 0
        while pos < len(indices):
            n, aspect, batch = self.batch_parameters(rng)
            seeds = [rng.randint(0, 2**31 - 1) for _ in range(batch)]
            chunk = indices[pos : pos + batch]
            pos += batch
            yield [
                SampleRequest(scene, n, aspect, (s * 1000003 + self.rank) % 2**31)
                for scene, s in zip(chunk, seeds, strict=False)
            ]

    def __iter__(self) -> Iterator[list[SampleRequest]]:
        skip = self.start
        epoch = 0
        while True:
            for batch in self._epoch_batches(epoch):
                if skip:
                    skip -= 1
                    continue
                yield batch
            epoch += 1

    def __len__(self) -> int:
        """Approximate batches per epoch (batch sizes vary)."""
        mean_views = sum(self.images_per_element) / 2
        per_batch = max(1, int(self.images_per_batch // mean_views))
        return max(1, -(-self.epoch_length // (per_batch * self.num_replicas)))
