"""The per-sequence benchmark protocol: GT rescaling, Sim(3) alignment, then every metric group."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from dvlt_core.eval.alignment import Sim3, fit_sim3
from dvlt_core.eval.depth import DepthAlign, compute_depth_metrics
from dvlt_core.eval.intrinsics import compute_intrinsics_metrics
from dvlt_core.eval.pointmap import compute_pointmap_metrics
from dvlt_core.eval.pose import compute_pose_metrics


@dataclass(frozen=True)
class SequencePrediction:
    """Postprocessed predictions for one sequence of S frames of size H×W."""

    extrinsics_c2w: Tensor  # (S, 4, 4) or (S, 3, 4), OpenCV camera-to-world
    intrinsics: Tensor  # (S, 3, 3), pixels
    depths: Tensor  # (S, H, W)
    world_points: Tensor  # (S, H, W, 3): depth unprojected through the fitted cameras
    world_points_direct: Tensor | None = None  # (S, H, W, 3): rays∘depth, if available


@dataclass(frozen=True)
class SequenceGroundTruth:
    """GT of one sequence as the data loader stores it (divided by ``scale_factor``)."""

    extrinsics_c2w: Tensor  # (S, 4, 4) or (S, 3, 4)
    intrinsics: Tensor  # (S, 3, 3)
    depths: Tensor  # (S, H, W)
    world_points: Tensor  # (S, H, W, 3)
    point_masks: Tensor  # (S, H, W) bool
    scale_factor: float = 1.0  # multiply by this to undo the loader normalisation

    def rescaled(self) -> SequenceGroundTruth:
        """Depths, world points and camera translations multiplied by ``scale_factor``."""
        c2w = self.extrinsics_c2w.clone()
        c2w[..., :3, 3] = self.extrinsics_c2w[..., :3, 3] * self.scale_factor
        return replace(
            self,
            extrinsics_c2w=c2w,
            depths=self.depths * self.scale_factor,
            world_points=self.world_points * self.scale_factor,
            scale_factor=1.0,
        )


@dataclass(frozen=True)
class SequenceEvaluation:
    """Metrics of one sequence, grouped as ``pose``, ``depth``, ``pointmap``, ``intrinsics``."""

    metrics: dict[str, dict[str, float]]
    sim3: Sim3 | None  # the alignment applied to the prediction (None if disabled)
    aligned: SequencePrediction  # the prediction after alignment, in GT units

    def flat_metrics(self) -> dict[str, float]:
        """All metrics in one ``{"<group>/<name>": value}`` dict (for :func:`aggregate_metrics`)."""
        return {f"{g}/{k}": v for g, group in self.metrics.items() for k, v in group.items()}


def _float32(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32)


def align_prediction(
    pred: SequencePrediction,
    gt: SequenceGroundTruth,
    outlier_rounds: int = 1,
    outlier_percentile: float = 95.0,
) -> tuple[SequencePrediction, Sim3]:
    """Fit a Sim(3) from ``pred.world_points`` to ``gt.world_points`` (point mask), apply it.

    The same similarity moves the unprojected and the direct world points and the cameras
    (``R_i ← R·R_i``, ``t_i ← R·(c·t_i) + t``) and scales the depths by ``c``. ``gt`` must
    already be in the units the metrics are reported in (see :meth:`SequenceGroundTruth.rescaled`).
    """
    mask = gt.point_masks.bool()
    if int(mask.sum()) < 3:
        raise ValueError("Sim(3) alignment needs at least 3 valid GT points; pass align=False "
                         "to evaluate a sequence without valid GT points")
    sim3 = fit_sim3(
        pred.world_points[mask],
        gt.world_points[mask],
        outlier_rounds=outlier_rounds,
        outlier_percentile=outlier_percentile,
    )
    direct = pred.world_points_direct
    aligned = replace(
        pred,
        extrinsics_c2w=sim3.apply_c2w(pred.extrinsics_c2w),
        depths=pred.depths * sim3.scale,
        world_points=sim3.apply_points(pred.world_points),
        world_points_direct=None if direct is None else sim3.apply_points(direct),
    )
    return aligned, sim3


def evaluate_sequence(
    pred: SequencePrediction,
    gt: SequenceGroundTruth,
    *,
    scale_gt: bool = True,
    align: bool = True,
    outlier_rounds: int = 1,
    outlier_percentile: float = 95.0,
    depth_align: DepthAlign = "median",
    pose_thresholds: Sequence[int] = (1, 3, 5, 20, 30),
) -> SequenceEvaluation:
    """Run the benchmark protocol on one sequence.

    Steps: cast to float32; rescale GT by ``scale_factor``; Sim(3)-align the prediction
    (:func:`align_prediction`); then pose metrics (float64), depth metrics over
    ``point_mask ∧ gt > 0`` with ``depth_align`` (a second, depth-only alignment on top of the
    Sim(3) scale), point-map metrics for the unprojected (``_depth``) and direct (``_world``)
    points, and focal-length errors.
    """
    pred = SequencePrediction(
        extrinsics_c2w=_float32(pred.extrinsics_c2w),
        intrinsics=_float32(pred.intrinsics),
        depths=_float32(pred.depths),
        world_points=_float32(pred.world_points),
        world_points_direct=None
        if pred.world_points_direct is None
        else _float32(pred.world_points_direct),
    )
    gt = replace(
        gt,
        extrinsics_c2w=_float32(gt.extrinsics_c2w),
        intrinsics=_float32(gt.intrinsics),
        depths=_float32(gt.depths),
        world_points=_float32(gt.world_points),
        point_masks=gt.point_masks.bool(),
    )
    if pred.depths.shape != gt.depths.shape:
        raise ValueError(f"predicted depths {tuple(pred.depths.shape)} and GT depths "
                         f"{tuple(gt.depths.shape)} differ; predictions must be at GT resolution")
    if scale_gt:
        gt = gt.rescaled()
    sim3 = None
    if align:
        pred, sim3 = align_prediction(pred, gt, outlier_rounds, outlier_percentile)

    mask = gt.point_masks
    pointmap = compute_pointmap_metrics(pred.world_points, gt.world_points, mask, "depth")
    if pred.world_points_direct is not None:
        pointmap.update(
            compute_pointmap_metrics(pred.world_points_direct, gt.world_points, mask, "world")
        )
    groups = {
        "pose": compute_pose_metrics(
            pred.extrinsics_c2w.to(torch.float64),
            gt.extrinsics_c2w.to(torch.float64),
            thresholds=pose_thresholds,
        ),
        "depth": compute_depth_metrics(
            pred.depths, gt.depths, mask & (gt.depths > 0), align=depth_align
        ),
        "pointmap": pointmap,
        "intrinsics": compute_intrinsics_metrics(pred.intrinsics, gt.intrinsics),
    }
    metrics = {name: {k: float(v) for k, v in group.items()} for name, group in groups.items()}
    return SequenceEvaluation(metrics=metrics, sim3=sim3, aligned=pred)


def aggregate_metrics(per_sequence: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average per-sequence metrics over sequences, dropping NaNs.

    Keys are taken from the first sequence. For each key the result holds the mean and, as
    ``<key>_std``, the unbiased standard deviation (NaN for a single sequence). Keys whose values
    are all NaN are left out.
    """
    if not per_sequence:
        raise ValueError("no sequences to aggregate")
    out: dict[str, float] = {}
    for key in per_sequence[0]:
        values = [float(m[key]) for m in per_sequence if not math.isnan(float(m[key]))]
        if not values:
            continue
        if len(values) == 1:  # no spread to estimate (torch would warn and give NaN)
            out[key], out[f"{key}_std"] = values[0], math.nan
            continue
        std, mean = torch.std_mean(torch.tensor(values, dtype=torch.float64))
        out[key] = float(mean)
        out[f"{key}_std"] = float(std)
    return out
