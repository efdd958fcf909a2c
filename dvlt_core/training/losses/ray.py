"""Ray loss: L1 between predicted and GT world rays."""

from __future__ import annotations

import torch
from torch import Tensor

from dvlt_core.training.losses.common import sanitize
from dvlt_core.training.losses.config import RayLossConfig


def ray_loss(
    pred_rays: Tensor,
    gt_rays: Tensor,
    mask: Tensor,
    pred_scale: Tensor | None,
    gt_scale: Tensor | None,
    config: RayLossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean ``|Δ|`` over pixels and the 6 channels per view, clamped at ``max_loss``, then averaged
    over the views with more than ``min_valid_pixels`` valid GT points.

    Only the origins are divided by the scene scales; directions are scale-free.

    Args:
        pred_rays, gt_rays: (B, S, H, W, 6) ``[direction | origin]``.
        mask: (B, S, H, W) GT validity (selects views; also pixels with ``pixel_mask``).
        pred_scale, gt_scale: (B,) normalisation scales or None.
    """
    if pred_scale is not None:
        s = pred_scale.view(-1, 1, 1, 1, 1)
        pred_rays = torch.cat([pred_rays[..., :3], pred_rays[..., 3:] / s], dim=-1)
    if gt_scale is not None:
        s = gt_scale.view(-1, 1, 1, 1, 1)
        gt_rays = torch.cat([gt_rays[..., :3], gt_rays[..., 3:] / s], dim=-1)
    view_valid = mask.sum(dim=(-1, -2)) > config.min_valid_pixels  # (B, S)

    err = (pred_rays - gt_rays).abs()
    if config.pixel_mask:
        m = mask[..., None].to(err.dtype)
        per_view = (err * m).sum(dim=(-1, -2, -3)) / (6 * m.sum(dim=(-1, -2, -3))).clamp(min=1)
    else:
        per_view = err.mean(dim=(-1, -2, -3))
    per_view = sanitize(per_view.clamp(max=config.max_loss))
    per_view = per_view * view_valid.float()
    per_sample = per_view.sum(dim=1) / view_valid.sum(dim=1).clamp(min=1)
    return per_sample, {"loss": per_sample.detach().mean()}
