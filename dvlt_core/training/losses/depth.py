"""Depth loss: L1 regression plus the multi-scale edge (gradient-matching) term."""

from __future__ import annotations

from torch import Tensor

from dvlt_core.training.losses.common import masked_sample_mean, pooled_mean, sanitize
from dvlt_core.training.losses.config import DepthLossConfig, EdgeClamp


def edge_loss(pred: Tensor, gt: Tensor, mask: Tensor, clamp: EdgeClamp = "sum") -> Tensor:
    """Edge loss per view: ``Σ |∇ₓ(m·pred) − ∇ₓ(m·gt)| + |∇ᵧ(m·pred) − ∇ᵧ(m·gt)|`` over pixel pairs
    whose two pixels are both valid, divided by the number of valid pixels (≥ 1).

    Args:
        pred, gt: (N, H, W) depth maps.
        mask: (N, H, W) validity.
        clamp: ``"sum"`` sanitises (clamps at 100) the per-view sum before dividing (upstream);
            ``"mean"`` sanitises the per-view mean.

    Returns:
        (N,) per-view losses.
    """
    m = mask.to(pred.dtype)
    pred_m, gt_m = pred * m, gt * m
    pair_x = m[:, :, 1:] * m[:, :, :-1]
    pair_y = m[:, 1:, :] * m[:, :-1, :]
    diff_x = (pred_m[:, :, 1:] - pred_m[:, :, :-1]) - (gt_m[:, :, 1:] - gt_m[:, :, :-1])
    diff_y = (pred_m[:, 1:, :] - pred_m[:, :-1, :]) - (gt_m[:, 1:, :] - gt_m[:, :-1, :])
    total = (pair_x * diff_x.abs()).sum(dim=(1, 2)) + (pair_y * diff_y.abs()).sum(dim=(1, 2))
    count = m.sum(dim=(1, 2)).clamp(min=1)
    if clamp == "sum":
        return sanitize(total) / count
    return sanitize(total / count)


def multiscale_edge_loss(
    pred: Tensor, gt: Tensor, mask: Tensor, scales: int = 4, clamp: EdgeClamp = "sum"
) -> Tensor:
    """:func:`edge_loss` averaged over strides 1, 2, 4, … (plain ``[::s, ::s]`` subsampling)."""
    total = pred.new_zeros(pred.shape[0])
    for level in range(scales):
        s = 2**level
        total = total + edge_loss(pred[:, ::s, ::s], gt[:, ::s, ::s], mask[:, ::s, ::s], clamp)
    return total / scales


def depth_loss(
    pred_depth: Tensor,
    gt_depth: Tensor,
    mask: Tensor,
    is_synthetic: Tensor | None,
    pred_scale: Tensor | None,
    gt_scale: Tensor | None,
    config: DepthLossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``|d_gt/s_gt − d_pred/s_pred|`` over valid pixels plus ``edge_weight`` × the edge term.

    The edge term is averaged over scales then views, and (with ``edge_synthetic_only``) is
    computed only for samples flagged synthetic: real-sensor depth edges are too noisy.

    Args:
        pred_depth: (B, S, H, W) or (B, S, H, W, 1); gt_depth and mask: (B, S, H, W).
        is_synthetic: (B,) or (B, 1) booleans; required when ``edge_synthetic_only``.
        pred_scale, gt_scale: (B,) normalisation scales or None.
    """
    if pred_depth.ndim == 5:
        pred_depth = pred_depth[..., 0]
    gt = sanitize(gt_depth)
    pred = pred_depth
    if pred_scale is not None:
        pred = pred / pred_scale.view(-1, 1, 1, 1)
    if gt_scale is not None:
        gt = gt / gt_scale.view(-1, 1, 1, 1)
    B, S, H, W = pred.shape
    diff = sanitize((gt - pred)[..., None].norm(dim=-1))
    reg = masked_sample_mean(diff, mask)

    edge = reg.new_zeros(B)
    if config.edge_weight != 0:
        edge_mask = mask
        if config.edge_synthetic_only:
            if is_synthetic is None:
                raise ValueError("the depth edge loss needs batch['is_synthetic'] (B,) booleans; "
                                 "or set DepthLossConfig(edge_synthetic_only=False)")
            edge_mask = mask & is_synthetic.reshape(B, 1, 1, 1).bool()
        per_view = multiscale_edge_loss(
            pred.reshape(B * S, H, W),
            gt.reshape(B * S, H, W),
            edge_mask.reshape(B * S, H, W),
            config.edge_scales,
            config.edge_clamp,
        )
        edge = per_view.view(B, S).mean(dim=1)
    per_sample = reg + config.edge_weight * edge
    return per_sample, {
        "loss_conf": per_sample.detach().mean(),
        "loss_reg": pooled_mean(diff.detach(), mask),
        "loss_grad": edge.detach().mean(),
        "loss_conf_regularizer": per_sample.new_zeros(()),
    }
