"""The full evaluation chain (``e2e__`` golden group): postprocessing, Sim(3), every evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dvlt_core.eval import (
    SequenceGroundTruth,
    SequencePrediction,
    Sim3,
    aggregate_metrics,
    compute_pose_metrics,
    evaluate_sequence,
    postprocess_raw_predictions,
)
from dvlt_core.eval.pose import pair_indices


@pytest.fixture(scope="module")
def golden(reference_dir):
    with np.load(reference_dir / "metrics_golden.npz") as data:
        return {k: data[k] for k in data.files if k.startswith("e2e__")}


def _t(golden, key):
    return torch.from_numpy(golden[key])


def _ground_truth(golden) -> SequenceGroundTruth:
    return SequenceGroundTruth(
        extrinsics_c2w=_t(golden, "e2e__batch_extrinsics_c2w")[0],
        intrinsics=_t(golden, "e2e__batch_intrinsics")[0],
        depths=_t(golden, "e2e__batch_depths")[0],
        world_points=_t(golden, "e2e__batch_world_points")[0],
        point_masks=_t(golden, "e2e__batch_point_masks")[0],
        scale_factor=float(golden["e2e__batch_scale_factor"][0]),
    )


def _stored_prediction(golden) -> SequencePrediction:
    """The upstream postprocessed prediction, with the direct points rebuilt from the raw rays."""
    rays = _t(golden, "e2e__raw_rays")[0]
    depth = _t(golden, "e2e__raw_depth")[0, ..., 0]
    return SequencePrediction(
        extrinsics_c2w=_t(golden, "e2e__pred_extrinsics_c2w_3x4"),
        intrinsics=_t(golden, "e2e__pred_intrinsics"),
        depths=depth,
        world_points=_t(golden, "e2e__pred_world_points")[0],
        world_points_direct=rays[..., 3:6] + rays[..., 0:3] * depth[..., None],
    )


# The Sim(3) is a float32 fit over ~12k points; reduction order (CPU kernels) moves it by ~1e-6.
SIM3_ATOL = 1e-5
# Rounding of the float64 cosines the pose metrics take arccos of (a few ulp, generously).
FLOAT64_COS_ERROR = 1e-14


def _upstream_aligned_c2w(golden) -> torch.Tensor:
    """The stored cameras moved by the stored Sim(3): upstream's aligned cameras, bit for bit."""
    matrix = _t(golden, "e2e__sim3_transform")
    sim3 = Sim3(matrix[:, :3], matrix[:, 3], torch.tensor(float(golden["e2e__sim3_scale"])))
    return sim3.apply_c2w(_stored_prediction(golden).extrinsics_c2w)


def _arccos_spread(angle: float, cos_error: float) -> float:
    """How far ``arccos`` moves from ``angle`` when its argument moves by ``cos_error``."""
    moved = (min(1.0, max(-1.0, math.cos(angle) + d)) for d in (cos_error, -cos_error))
    return max(abs(math.acos(cos) - angle) for cos in moved)


def _polar(rotation: np.ndarray) -> tuple[np.ndarray, float]:
    """The nearest rotation Q of ``rotation`` = Q(I + S), and ``‖S‖_F`` (its non-orthogonality)."""
    u, singular, vt = np.linalg.svd(rotation)
    return u @ vt, float(np.sqrt(((singular - 1.0) ** 2).sum()))


def _chord_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two rotations or two unit vectors from their chord: stable near 0."""
    scale = math.sqrt(8) if a.ndim == 2 else 2.0
    return 2 * math.asin(min(1.0, float(np.linalg.norm(a - b)) / scale))


def _pose_error_tolerances(ours: torch.Tensor, upstream: torch.Tensor, gt: torch.Tensor):
    """Bounds on |our R_error/T_error − upstream's| derived from the cameras that went in.

    The metrics take arccos of cosines near 1 (errors of ~0.1°), where arccos has slope
    1/sin θ: a cosine error δ moves the angle by up to ``_arccos_spread(θ, δ)`` ≤ √(2δ).
    The cosine of the rotation error is ``(tr(G_relᵀ·P_rel) − 1)/2`` of float32 cameras that
    are rotations only to ~1e-7 (A = Q(I + S), S from rounding): the four factors of a pair move
    the trace from that of their nearest rotations Q by at most √3·(∏(1 + ‖S‖_F) − 1). That
    ~1e-6 cosine error is worth up to 0.06° here (upstream's float32 chain clips one pair to
    exactly 0° whose rotations are 0.063° apart), so it is propagated for both chains, not fixed.
    Between the nearest rotations the error is a geodesic distance, so the triangle inequality
    bounds the difference of the two chains by how far their aligned cameras i and j are apart
    (well conditioned: ~1e-5°). Translation errors are angles between vectors: the triangle
    inequality alone bounds them by the angle between the two chains' relative translations
    (folding to min(θ, 180° − θ) does not enlarge differences). Per-pair bounds average into
    bounds on the means.
    """
    ours, upstream, gt = (x.detach().double().numpy() for x in (ours, upstream, gt))
    first, second = (idx.numpy() for idx in pair_indices(len(gt)))

    def relative(c2w, i, j):  # inv(T_j)·T_i, as compute_pose_metrics forms it
        rot_j_t = c2w[j, :3, :3].T
        return rot_j_t @ c2w[i, :3, :3], rot_j_t @ (c2w[i, :3, 3] - c2w[j, :3, 3])

    def rotation_error_spread(c2w, i, j):
        polars = [_polar(x[:3, :3]) for x in (gt[i], gt[j], c2w[i], c2w[j])]
        (g_i, _), (g_j, _), (p_i, _), (p_j, _) = polars
        angle = _chord_angle(g_j.T @ g_i, p_j.T @ p_i)
        trace_error = math.sqrt(3) * (math.prod(1 + s for _, s in polars) - 1)
        return _arccos_spread(angle, trace_error / 2 + FLOAT64_COS_ERROR)

    def direction(vector):
        return vector / np.linalg.norm(vector)

    rot_bounds, trans_bounds = [], []
    for i, j in zip(first, second, strict=True):
        apart = sum(_chord_angle(_polar(ours[k, :3, :3])[0], _polar(upstream[k, :3, :3])[0])
                    for k in (i, j))
        rot_bounds.append(rotation_error_spread(ours, i, j)
                          + rotation_error_spread(upstream, i, j) + apart)
        t_ours, t_upstream = relative(ours, i, j)[1], relative(upstream, i, j)[1]
        trans_bounds.append(_chord_angle(direction(t_ours), direction(t_upstream))
                            + 2 * math.sqrt(2 * FLOAT64_COS_ERROR))
    return {"R_error": math.degrees(float(np.mean(rot_bounds))),
            "T_error": math.degrees(float(np.mean(trans_bounds)))}


def _assert_metrics(golden, metrics, loose: dict[str, float]):
    for group, values in metrics.items():
        for key, value in values.items():
            ref = float(golden[f"e2e__{group}__{key}"])
            atol = loose.get(key, 1e-5)
            assert value == pytest.approx(ref, rel=1e-5, abs=atol), f"{group}/{key}"
    n_keys = sum(len(v) for v in metrics.values())
    n_golden = sum(
        1 for k in golden
        if k.split("__")[1] in ("pose", "depth", "pointmap", "intrinsics")
    )
    assert n_keys == n_golden


def _assert_sim3(golden, sim3: Sim3):
    np.testing.assert_allclose(sim3.matrix_3x4.numpy(), golden["e2e__sim3_transform"],
                               atol=SIM3_ATOL)
    assert float(sim3.scale) == pytest.approx(float(golden["e2e__sim3_scale"]), rel=1e-5)


def test_protocol_on_stored_postprocessing_matches_upstream(golden):
    gt = _ground_truth(golden)
    result = evaluate_sequence(_stored_prediction(golden), gt)
    _assert_sim3(golden, result.sim3)
    loose = _pose_error_tolerances(result.aligned.extrinsics_c2w, _upstream_aligned_c2w(golden),
                                   gt.rescaled().extrinsics_c2w)
    _assert_metrics(golden, result.metrics, loose)


def test_pose_metrics_exact_given_the_upstream_sim3(golden):
    pred_c2w = _upstream_aligned_c2w(golden)
    gt = _ground_truth(golden).rescaled()
    metrics = compute_pose_metrics(pred_c2w.double(), gt.extrinsics_c2w.double())
    for key, value in metrics.items():
        assert float(value) == pytest.approx(float(golden[f"e2e__pose__{key}"]), abs=1e-9), key


def test_gt_rescaling_and_alignment_put_predictions_in_gt_units(golden):
    gt = _ground_truth(golden)
    result = evaluate_sequence(_stored_prediction(golden), gt)
    mask = gt.point_masks
    err = (result.aligned.world_points - gt.rescaled().world_points)[mask].norm(dim=-1)
    assert float(err.median()) < 0.05  # metres; the unaligned prediction is off by a similarity
    unaligned = evaluate_sequence(_stored_prediction(golden), gt, align=False)
    assert unaligned.sim3 is None
    assert unaligned.metrics["pointmap"]["l2_depth"] > 10 * result.metrics["pointmap"]["l2_depth"]
    summary = aggregate_metrics([result.flat_metrics(), unaligned.flat_metrics()])
    l2 = [r.metrics["pointmap"]["l2_depth"] for r in (result, unaligned)]
    mean_l2 = sum(l2) / 2
    assert summary["pointmap/l2_depth"] == pytest.approx(mean_l2)
    assert summary["pose/Auc_30"] == 1.0 and summary["pose/Auc_30_std"] == 0.0


def test_full_chain_from_raw_outputs(golden):
    """Raw rays/depth → rays_to_pose + unprojection → protocol (upstream predict + evaluators)."""
    (pred,) = postprocess_raw_predictions(
        _t(golden, "e2e__raw_rays"), _t(golden, "e2e__raw_depth"), _t(golden, "e2e__raw_depth_conf")
    )
    np.testing.assert_allclose(pred.extrinsics_c2w[:, :3].numpy(),
                               golden["e2e__pred_extrinsics_c2w_3x4"], atol=1e-4)
    np.testing.assert_allclose(pred.intrinsics.numpy(), golden["e2e__pred_intrinsics"], atol=1e-4,
                               rtol=1e-5)
    np.testing.assert_allclose(pred.world_points.numpy(), golden["e2e__pred_world_points"][0],
                               atol=1e-4, rtol=1e-5)
    gt = _ground_truth(golden)
    result = evaluate_sequence(pred, gt)
    _assert_sim3(golden, result.sim3)
    # Focal errors inherit the postprocessing tolerance (1e-4 px); a pose that differs by ~1e-5
    # may move an inlier fraction by one pixel (1/N).
    n_valid = int(golden["e2e__batch_point_masks"].sum())
    loose = _pose_error_tolerances(result.aligned.extrinsics_c2w, _upstream_aligned_c2w(golden),
                                   gt.rescaled().extrinsics_c2w)
    loose.update(focal_x_error=1e-4, focal_y_error=1e-4, focal_mean_error=1e-4)
    loose.update({k: 1.5 / n_valid for k in result.metrics["pointmap"] if k.startswith("inlier")})
    _assert_metrics(golden, result.metrics, loose)
