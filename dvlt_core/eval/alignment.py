"""Similarity (Sim(3)) alignment of predictions to ground truth: Umeyama with outlier rejection."""

from __future__ import annotations

import torch
from torch import Tensor

from dvlt_core.eval.quantile import kthvalue_quantile
from dvlt_core.geometry.similarity import Sim3


def umeyama_alignment(
    x: Tensor, y: Tensor, with_scale: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity ``y ≈ c·R·x + t`` between two point sets (Umeyama, PAMI 1991).

    Args:
        x: source points, shape (m, n) (dimension first, as in the paper).
        y: target points, shape (m, n).
        with_scale: fit the scale ``c``; otherwise ``c = 1``.

    Returns:
        ``(R, t, c)``: rotation (m, m) with det +1, translation (m,), scale (0-d tensor).
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both be (m, n) point sets, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}; pass points as columns (transpose an (n, 3) array)")
    m, n = x.shape
    if n < 2:
        raise ValueError(f"need at least 2 points for an alignment, got {n}")
    mean_x = x.mean(dim=1)
    mean_y = y.mean(dim=1)
    x_c = x - mean_x[:, None]
    y_c = y - mean_y[:, None]
    var_x = torch.linalg.norm(x_c) ** 2 / n
    cov = (y_c @ x_c.T) / float(n)
    u, d, vh = torch.linalg.svd(cov)
    sign = torch.eye(m, dtype=x.dtype, device=x.device)
    if torch.det(u) * torch.det(vh) < 0.0:
        sign[m - 1, m - 1] = -1.0  # reflection -> proper rotation (Kabsch)
    rotation = u @ sign @ vh
    if with_scale:
        scale = torch.trace(torch.diag(d) @ sign) / var_x
    else:
        scale = torch.tensor(1.0, dtype=x.dtype, device=x.device)
    translation = mean_y - scale * (rotation @ mean_x)
    return rotation, translation, scale


def fit_sim3(
    pred_points: Tensor,
    gt_points: Tensor,
    outlier_rounds: int = 1,
    outlier_percentile: float = 95.0,
    min_inliers: int = 10,
    with_scale: bool = True,
) -> Sim3:
    """Fit the Sim(3) mapping predicted onto GT points, with residual-based outlier rejection.

    After the first Umeyama fit, each round keeps the points whose residual
    ``‖c·R·x + t − y‖`` is at most the ``outlier_percentile`` quantile (nearest rank, Python
    rounding, see :func:`kthvalue_quantile`) and refits, unless fewer than ``min_inliers`` remain.
    The benchmark protocol uses one round at the 95th percentile.

    Args:
        pred_points: (N, 3) predicted points.
        gt_points: (N, 3) corresponding GT points.
        outlier_rounds: number of rejection rounds (0 disables rejection).
        outlier_percentile: residual percentile kept per round, in (0, 100].
        min_inliers: stop rejecting when fewer inliers than this would remain.
        with_scale: fit the scale (Sim(3)); otherwise a rigid SE(3) fit.
    """
    if pred_points.ndim != 2 or pred_points.shape[-1] != 3 or pred_points.shape != gt_points.shape:
        raise ValueError(f"expected two (N, 3) point sets, got {tuple(pred_points.shape)} and "
                         f"{tuple(gt_points.shape)}")
    rotation, translation, scale = umeyama_alignment(pred_points.T, gt_points.T, with_scale)
    for _ in range(outlier_rounds):
        aligned = Sim3(rotation, translation, scale).apply_points(pred_points)
        residuals = (aligned - gt_points).norm(dim=-1)
        threshold = kthvalue_quantile(residuals, outlier_percentile / 100.0)
        inliers = residuals <= threshold
        if inliers.sum() < min_inliers:
            break
        rotation, translation, scale = umeyama_alignment(
            pred_points[inliers].T, gt_points[inliers].T, with_scale
        )
    return Sim3(rotation=rotation, translation=translation, scale=scale)
