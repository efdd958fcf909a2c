"""World-point regression loss."""

from __future__ import annotations

from torch import Tensor

from dvlt_core.training.losses.common import masked_sample_mean, pooled_mean, sanitize


def point_loss(
    pred_points: Tensor,
    gt_points: Tensor,
    mask: Tensor,
    pred_scale: Tensor | None,
    gt_scale: Tensor | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pixel ``‖P_gt/s_gt − P_pred/s_pred‖₂`` averaged over the valid pixels of each sample.

    Args:
        pred_points, gt_points: (B, S, H, W, 3). GT is sanitised (NaN → 0, clamp ±100) first.
        mask: (B, S, H, W) validity.
        pred_scale, gt_scale: (B,) normalisation scales, or None for no normalisation.

    Returns:
        ``(per_sample (B,), components)`` with ``loss_conf`` (mean total), ``loss_reg`` (mean over
        all valid pixels of the batch), ``loss_grad`` and ``loss_conf_regularizer`` (both 0 in the
        released recipe), named as upstream logs them.
    """
    gt = sanitize(gt_points)
    pred = pred_points
    if pred_scale is not None:
        pred = pred / pred_scale.view(-1, 1, 1, 1, 1)
    if gt_scale is not None:
        gt = gt / gt_scale.view(-1, 1, 1, 1, 1)
    diff = sanitize((gt - pred).norm(dim=-1))
    per_sample = masked_sample_mean(diff, mask)
    zero = per_sample.new_zeros(())
    return per_sample, {
        "loss_conf": per_sample.detach().mean(),
        "loss_reg": pooled_mean(diff.detach(), mask),
        "loss_grad": zero,
        "loss_conf_regularizer": zero,
    }
