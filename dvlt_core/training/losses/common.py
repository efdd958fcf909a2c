"""Helpers shared by the loss terms: sanitising, scene-scale normalisation, masked means."""

from __future__ import annotations

import torch
from torch import Tensor

HARD_MAX = 100.0


def sanitize(values: Tensor, hard_max: float | None = HARD_MAX) -> Tensor:
    """Replace NaN/±Inf by 0, then clamp to ``[−hard_max, hard_max]`` (upstream check_and_fix)."""
    values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    if hard_max is not None:
        values = values.clamp(min=-hard_max, max=hard_max)
    return values


def normalization_scale(points: Tensor, mask: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean norm of the valid points of each sample, clamped to ``[eps, 1e3]``.

    Args:
        points: (B, S, H, W, 3) world points.
        mask: (B, S, H, W) boolean validity.

    Returns:
        (B,) scales ``Σ‖p‖·m / (Σm + eps)``.
    """
    dist = points.norm(dim=-1)
    total = (dist * mask).sum(dim=(1, 2, 3))
    count = mask.sum(dim=(1, 2, 3))
    return (total / (count + eps)).clamp(min=eps, max=1e3)


def masked_sample_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-sample mean of ``values`` (B, ...) over ``mask`` (B, ...); 0 for an empty mask."""
    B = values.shape[0]
    flat_mask = mask.reshape(B, -1)
    summed = (values.reshape(B, -1) * flat_mask.float()).sum(dim=1)
    return summed / flat_mask.sum(dim=1).clamp(min=1)


def pooled_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values[mask]`` over the whole batch (for logging); 0 when nothing is valid."""
    selected = values[mask]
    return selected.mean() if selected.numel() else values.new_zeros(())
