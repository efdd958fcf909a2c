"""Depth metrics (AbsRel, SqRel, RMSE, MAE, δ1-3) with the four upstream alignment modes."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

DepthAlign = Literal["median", "scale", "scale_and_shift", "none"]
DEPTH_ALIGN_MODES: tuple[str, ...] = ("median", "scale", "scale_and_shift", "none")


def align_depth_median(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """``s = median(gt / max(pred, 1e-8))``, ``b = median(gt − s·pred)``; returns ``s·pred + b``.

    ``torch.median`` returns the lower of the two middle values for an even count (not their
    mean); the benchmark numbers depend on that.
    """
    pred_v, gt_v = pred[mask], gt[mask]
    if pred_v.numel() == 0:
        return pred
    scale = torch.median(gt_v / torch.clamp(pred_v, min=1e-8))
    shift = torch.median(gt_v - scale * pred_v)
    return pred * scale + shift


def align_depth_scale(pred: Tensor, gt: Tensor, mask: Tensor, iterations: int = 10) -> Tensor:
    """Scale-only L1 alignment (Weiszfeld IRLS from ``mean(gt)/mean(pred)``), ``s ≥ 1e-3``."""
    pred_v, gt_v = pred[mask], gt[mask]
    if pred_v.numel() == 0:
        return pred
    s = torch.nanmean(gt_v) / torch.nanmean(pred_v)
    for _ in range(iterations):
        weights = 1.0 / ((s * pred_v - gt_v).abs() + 1e-8)
        s = torch.sum(weights * pred_v * gt_v) / torch.sum(weights * pred_v**2)
    return pred * s.clamp(min=1e-3).detach()


def align_depth_scale_and_shift(
    pred: Tensor,
    gt: Tensor,
    mask: Tensor,
    lr: float = 1e-4,
    max_iters: int = 1000,
    tol: float = 1e-6,
) -> Tensor:
    """Scale and shift minimising ``Σ|s·pred + b − gt|`` with Adam (the upstream procedure).

    Starts at ``s = median(gt)/median(pred)``, ``b = 0`` and stops after ``max_iters`` steps or
    when the loss changes by less than ``tol``. This is an approximate optimiser: results are
    reproducible on one machine but only loosely comparable across implementations (~1e-3).
    """
    pred_v, gt_v = pred[mask].detach(), gt[mask].detach()
    if pred_v.numel() == 0:
        return pred
    s_init = (torch.median(gt_v) / torch.median(pred_v)).item()
    with torch.enable_grad():
        s = torch.tensor([s_init], requires_grad=True, device=pred.device, dtype=pred.dtype)
        b = torch.tensor([0.0], requires_grad=True, device=pred.device, dtype=pred.dtype)
        optimizer = torch.optim.Adam([s, b], lr=lr)
        previous = None
        for _ in range(max_iters):
            optimizer.zero_grad()
            loss = torch.sum(torch.abs(s * pred_v + b - gt_v))
            loss.backward()
            optimizer.step()
            current = loss.item()
            if previous is not None and abs(previous - current) < tol:
                break
            previous = current
    return pred * s.detach() + b.detach()


_ALIGNERS = {
    "median": align_depth_median,
    "scale": align_depth_scale,
    "scale_and_shift": align_depth_scale_and_shift,
}


def compute_depth_metrics(
    pred: Tensor, gt: Tensor, valid_mask: Tensor | None = None, align: DepthAlign = "median"
) -> dict[str, Tensor]:
    """Depth metrics over the valid pixels after an optional alignment of the prediction.

    Args:
        pred: predicted depth, any shape (typically (S, H, W)).
        gt: GT depth of the same shape; must be > 0 wherever ``valid_mask`` is set.
        valid_mask: boolean mask of the same shape; defaults to ``gt > 0``.
        align: ``"median"`` (benchmark default), ``"scale"``, ``"scale_and_shift"`` or ``"none"``.
            The alignment is fitted jointly over all valid pixels of all views.

    Returns:
        0-d tensors ``AbsRel``, ``SqRel``, ``RMSE``, ``MAE``, ``Delta1``, ``Delta2``, ``Delta3``.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt depth differ in shape: {tuple(pred.shape)} vs "
                         f"{tuple(gt.shape)}; squeeze a trailing channel dimension first")
    if align not in DEPTH_ALIGN_MODES:
        raise ValueError(f"unknown depth alignment {align!r}; choose one of {DEPTH_ALIGN_MODES}")
    mask = gt > 0 if valid_mask is None else valid_mask.bool()
    if align != "none":
        pred = _ALIGNERS[align](pred, gt, mask)
    p, g = pred[mask], gt[mask]
    diff = p - g
    ratio = torch.maximum(p / g, g / p)
    return {
        "AbsRel": (diff.abs() / g).mean(),
        "SqRel": (diff**2 / g).mean(),
        "RMSE": torch.sqrt(torch.mean(diff**2)),
        "MAE": diff.abs().mean(),
        "Delta1": (ratio < 1.25).float().mean(),
        "Delta2": (ratio < 1.25**2).float().mean(),
        "Delta3": (ratio < 1.25**3).float().mean(),
    }
