"""The full evaluation chain (``e2e__`` golden group): postprocessing, Sim(3), every evaluator."""

from __future__ import annotations

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
# The golden pose errors are small (0.12 / 0.14 deg), where arccos of float32 cameras near
# identity is ill-conditioned: a 1e-6 change of the Sim(3) moves R_error by ~0.01 deg and T_error
# by ~1e-5 deg. With the golden Sim(3) they match to 1e-9 (test below); with our own fit we
# allow 0.02 / 1e-3 deg.
LOOSE_KEYS = {"R_error": 0.02, "T_error": 1e-3}


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
    result = evaluate_sequence(_stored_prediction(golden), _ground_truth(golden))
    _assert_sim3(golden, result.sim3)
    _assert_metrics(golden, result.metrics, LOOSE_KEYS)


def test_pose_metrics_exact_given_the_upstream_sim3(golden):
    matrix = _t(golden, "e2e__sim3_transform")
    sim3 = Sim3(matrix[:, :3], matrix[:, 3], torch.tensor(float(golden["e2e__sim3_scale"])))
    pred_c2w = sim3.apply_c2w(_stored_prediction(golden).extrinsics_c2w)
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
    result = evaluate_sequence(pred, _ground_truth(golden))
    _assert_sim3(golden, result.sim3)
    # Focal errors inherit the postprocessing tolerance (1e-4 px); a pose that differs by ~1e-5
    # may move an inlier fraction by one pixel (1/N).
    n_valid = int(golden["e2e__batch_point_masks"].sum())
    loose = dict(LOOSE_KEYS, focal_x_error=1e-4, focal_y_error=1e-4, focal_mean_error=1e-4)
    loose.update({k: 1.5 / n_valid for k in result.metrics["pointmap"] if k.startswith("inlier")})
    _assert_metrics(golden, result.metrics, loose)
