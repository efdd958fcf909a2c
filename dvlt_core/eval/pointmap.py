"""Point-map metrics: mean L2 error, relative error and inlier ratios over the GT point mask."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def compute_pointmap_metrics(
    pred_points: Tensor,
    gt_points: Tensor,
    point_mask: Tensor,
    suffix: str,
    inlier_thresholds_cm: Sequence[float] = (1.0, 5.0, 20.0),
    relative_inlier_threshold: float = 0.03,
) -> dict[str, Tensor]:
    """Compare (already aligned) predicted points with GT points over ``point_mask``.

    Args:
        pred_points: (..., 3) predicted world points in GT units (metres after rescaling).
        gt_points: (..., 3) GT world points.
        point_mask: (...) boolean mask of valid GT points.
        suffix: appended to every key (the benchmark uses ``"depth"`` for points unprojected
            through the fitted cameras and ``"world"`` for the direct rays∘depth points).
        inlier_thresholds_cm: absolute inlier thresholds in centimetres.
        relative_inlier_threshold: threshold on ``‖p − g‖/‖g‖``.

    Returns:
        ``l2_<s>`` (mean ‖p − g‖), ``absrel_<s>`` (mean ‖p − g‖/‖g‖ over ‖g‖ > 0),
        ``inlier_<s>@3%`` and ``inlier_<s>@{1,5,20}cm``.
    """
    if pred_points.shape != gt_points.shape or pred_points.shape[:-1] != point_mask.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred_points.shape)}, gt "
                         f"{tuple(gt_points.shape)}, mask {tuple(point_mask.shape)}")
    pred, gt = pred_points[point_mask], gt_points[point_mask]
    err = (pred - gt).norm(dim=-1)
    gt_norm = gt.norm(dim=-1)
    nonzero = gt_norm > 0
    rel = err[nonzero] / gt_norm[nonzero]
    metrics = {
        f"l2_{suffix}": err.mean(),
        f"absrel_{suffix}": rel.mean(),
        f"inlier_{suffix}@{relative_inlier_threshold:.0%}": (rel < relative_inlier_threshold)
        .float()
        .mean(),
    }
    for cm in inlier_thresholds_cm:
        metrics[f"inlier_{suffix}@{cm:.0f}cm"] = (err < cm / 100.0).float().mean()
    return metrics
