"""Intrinsics metrics: absolute focal-length errors in pixels."""

from __future__ import annotations

from torch import Tensor


def compute_intrinsics_metrics(pred_intrinsics: Tensor, gt_intrinsics: Tensor) -> dict[str, Tensor]:
    """Mean absolute ``fx``/``fy`` errors (pixels) over the frames of (S, 3, 3) intrinsics.

    Returns ``focal_x_error``, ``focal_y_error`` and their per-frame average
    ``focal_mean_error``. The principal point is not scored.
    """
    if pred_intrinsics.shape != gt_intrinsics.shape or pred_intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"expected matching (S, 3, 3) intrinsics, got "
                         f"{tuple(pred_intrinsics.shape)} and {tuple(gt_intrinsics.shape)}")
    err_x = (gt_intrinsics[..., 0, 0] - pred_intrinsics[..., 0, 0]).abs()
    err_y = (gt_intrinsics[..., 1, 1] - pred_intrinsics[..., 1, 1]).abs()
    return {
        "focal_x_error": err_x.mean(),
        "focal_y_error": err_y.mean(),
        "focal_mean_error": ((err_x + err_y) / 2.0).mean(),
    }
