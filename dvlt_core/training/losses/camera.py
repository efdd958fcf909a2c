"""Camera loss on the 9-value pose encoding ``[t | quaternion xyzw | fov_h, fov_w]``."""

from __future__ import annotations

import torch
from torch import Tensor

from dvlt_core.geometry import pose_encoding_from_cameras
from dvlt_core.training.losses.common import sanitize
from dvlt_core.training.losses.config import CameraLossConfig


def _quaternion_l1(pred: Tensor, gt: Tensor, mode: str) -> Tensor:
    """Per-sample quaternion L1 (mean over views and components) for (N, S, 4) inputs."""
    N = pred.shape[0]
    if mode == "raw_l1":
        return sanitize((pred - gt).abs()).reshape(N, -1).mean(dim=1)
    direct = (pred - gt).abs().sum(dim=-1)
    flipped = (pred + gt).abs().sum(dim=-1)
    return sanitize(torch.minimum(direct, flipped) / 4).mean(dim=1)


def camera_loss(
    pred_pose_enc: Tensor,
    gt_extrinsics_c2w: Tensor,
    gt_intrinsics: Tensor,
    mask: Tensor,
    pred_scale: Tensor | None,
    gt_scale: Tensor | None,
    config: CameraLossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-sample L1 on the pose encoding: ``w_T·L_T + w_R·L_R + w_fl·L_fl`` (weights from config).

    Translations are divided by the scene scales. Samples whose first view has at most
    ``min_valid_pixels`` valid GT points get a zero loss (still attached to the graph).

    Args:
        pred_pose_enc: (B, S, 9) predicted encoding (quaternion not normalised).
        gt_extrinsics_c2w: (B, S, 3|4, 4); gt_intrinsics: (B, S, 3, 3).
        mask: (B, S, H, W) GT validity; H and W also define the GT field of view.
        pred_scale, gt_scale: (B,) normalisation scales or None.
    """
    B, _, H, W = mask.shape
    gt = pose_encoding_from_cameras(gt_extrinsics_c2w, gt_intrinsics, (H, W))
    if gt_scale is not None:
        gt = torch.cat([gt[..., :3] / gt_scale.view(-1, 1, 1), gt[..., 3:]], dim=-1)
    pred = pred_pose_enc
    if pred_scale is not None:
        pred = torch.cat([pred[..., :3] / pred_scale.view(-1, 1, 1), pred[..., 3:]], dim=-1)

    valid = mask[:, 0].sum(dim=(-1, -2)) > config.min_valid_pixels
    finite_pred = torch.where(torch.isfinite(pred), pred, torch.zeros_like(pred))
    zeros = (finite_pred * 0).reshape(B, -1).mean(dim=1)  # keeps every sample on the graph
    loss_t, loss_r, loss_fl = zeros, zeros, zeros
    if bool(valid.any()):
        p, g = pred[valid], gt[valid]
        n = p.shape[0]
        t = sanitize((p[..., :3] - g[..., :3]).abs()).clamp(max=100).reshape(n, -1).mean(dim=1)
        r = _quaternion_l1(p[..., 3:7], g[..., 3:7], config.quaternion)
        fl = sanitize((p[..., 7:] - g[..., 7:]).abs()).reshape(n, -1).mean(dim=1)
        loss_t, loss_r, loss_fl = (zeros.clone().index_put((valid,), v) for v in (t, r, fl))
    per_sample = (
        config.translation_weight * loss_t
        + config.rotation_weight * loss_r
        + config.focal_weight * loss_fl
    )
    return per_sample, {
        "loss_T": loss_t.detach().mean(),
        "loss_R": loss_r.detach().mean(),
        "loss_fl": loss_fl.detach().mean(),
    }
