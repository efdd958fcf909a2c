"""Evaluation metrics and the benchmark protocol of DVLT (exact to the upstream evaluators)."""

from dvlt_core.eval.alignment import Sim3, fit_sim3, umeyama_alignment
from dvlt_core.eval.depth import DEPTH_ALIGN_MODES, DepthAlign, compute_depth_metrics
from dvlt_core.eval.intrinsics import compute_intrinsics_metrics
from dvlt_core.eval.pointmap import compute_pointmap_metrics
from dvlt_core.eval.pose import compute_pose_metrics, pose_auc, relative_pose_errors
from dvlt_core.eval.postprocess import postprocess_raw_predictions
from dvlt_core.eval.protocol import (
    SequenceEvaluation,
    SequenceGroundTruth,
    SequencePrediction,
    aggregate_metrics,
    align_prediction,
    evaluate_sequence,
)
from dvlt_core.eval.quantile import kthvalue_quantile

__all__ = [
    "DEPTH_ALIGN_MODES",
    "DepthAlign",
    "SequenceEvaluation",
    "SequenceGroundTruth",
    "SequencePrediction",
    "Sim3",
    "aggregate_metrics",
    "align_prediction",
    "compute_depth_metrics",
    "compute_intrinsics_metrics",
    "compute_pointmap_metrics",
    "compute_pose_metrics",
    "evaluate_sequence",
    "fit_sim3",
    "kthvalue_quantile",
    "pose_auc",
    "postprocess_raw_predictions",
    "relative_pose_errors",
    "umeyama_alignment",
]
