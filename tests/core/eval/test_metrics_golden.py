"""Metrics against the upstream goldens (metrics_golden.npz) and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dvlt_core.eval import (
    DEPTH_ALIGN_MODES,
    Sim3,
    aggregate_metrics,
    compute_depth_metrics,
    compute_pose_metrics,
    fit_sim3,
    kthvalue_quantile,
    pose_auc,
    relative_pose_errors,
    umeyama_alignment,
)

THRESHOLDS = (1, 3, 5, 20, 30)


@pytest.fixture(scope="module")
def golden(reference_dir):
    with np.load(reference_dir / "metrics_golden.npz") as data:
        return {k: data[k] for k in data.files}


def _t(golden, key):
    return torch.from_numpy(golden[key])


def _random_rotation(gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


@pytest.mark.parametrize("case", range(5))
def test_pose_metrics_match_upstream(golden, case):
    pred, gt = _t(golden, f"pose{case}__pred_c2w"), _t(golden, f"pose{case}__gt_c2w")
    rot, trans = relative_pose_errors(pred, gt)
    np.testing.assert_allclose(rot.numpy(), golden[f"pose{case}__rel_rot_err_deg"], rtol=0,
                               atol=1e-9)
    np.testing.assert_allclose(trans.numpy(), golden[f"pose{case}__rel_trans_err_deg"], rtol=0,
                               atol=1e-9)
    metrics = compute_pose_metrics(pred, gt, thresholds=THRESHOLDS)
    expected_keys = {"R_error", "T_error"} | {
        f"{p}_{t}" for p in ("Racc", "Tacc", "Auc") for t in THRESHOLDS
    }
    assert set(metrics) == expected_keys
    for key, value in metrics.items():
        ref = float(golden[f"pose{case}__metric__{key}"])
        tol = 1e-9 if key.endswith("_error") else 0.0
        assert float(value) == pytest.approx(ref, rel=0, abs=tol), key


def test_pose_metrics_invariant_to_global_similarity(golden):
    pred, gt = _t(golden, "pose3__pred_c2w"), _t(golden, "pose3__gt_c2w")
    reference = compute_pose_metrics(pred, gt, THRESHOLDS)
    gen = torch.Generator().manual_seed(7)
    for target in ("pred", "gt"):
        sim = Sim3(_random_rotation(gen), torch.randn(3, generator=gen, dtype=torch.float64),
                   torch.tensor(3.7, dtype=torch.float64))
        moved = compute_pose_metrics(sim.apply_c2w(pred) if target == "pred" else pred,
                                     sim.apply_c2w(gt) if target == "gt" else gt, THRESHOLDS)
        for key in reference:
            assert float(moved[key]) == pytest.approx(float(reference[key]), abs=1e-7), key


def test_pose_metrics_are_zero_for_a_perfect_prediction(golden):
    gt = _t(golden, "pose2__gt_c2w")
    metrics = compute_pose_metrics(gt, gt, THRESHOLDS)
    assert float(metrics["R_error"]) < 1e-5 and float(metrics["T_error"]) < 1e-5
    assert all(float(metrics[f"Auc_{t}"]) == 1.0 for t in THRESHOLDS)


def test_pose_metrics_reject_batched_input(golden):
    pred = _t(golden, "pose1__pred_c2w")
    with pytest.raises(ValueError, match="one sequence"):
        compute_pose_metrics(pred[None], pred[None])


def test_auc_matches_upstream(golden):
    r, t = _t(golden, "auc__r_err"), _t(golden, "auc__t_err")
    for thr in THRESHOLDS:
        assert float(pose_auc(r, t, thr)) == pytest.approx(float(golden[f"auc__value_{thr}"]),
                                                            rel=0, abs=1e-12)


def test_auc_uses_threshold_plus_one_bins():
    # With T=1 the bins are [0, 0.5) and [0.5, 1]; an error of 0.6 lands in the second bin, so
    # the curve is (0, 1) and the AUC 0.5. One-degree bins would give 1.0; 0 if > T dropped.
    err = torch.tensor([0.6], dtype=torch.float64)
    assert float(pose_auc(err, err, 1)) == 0.5
    assert float(pose_auc(err * 2, err, 1)) == 0.0  # 1.2 > T is dropped
    assert float(pose_auc(torch.tensor([1.0], dtype=torch.float64), err, 1)) == 0.5  # == T kept


@pytest.mark.parametrize("align", DEPTH_ALIGN_MODES)
@pytest.mark.parametrize("case", range(3))
def test_depth_metrics_match_upstream(golden, case, align):
    pred, gt = _t(golden, f"depth{case}__pred"), _t(golden, f"depth{case}__gt")
    mask = _t(golden, f"depth{case}__mask")
    metrics = compute_depth_metrics(pred, gt, mask, align=align)
    rel = 1e-3 if align == "scale_and_shift" else 1e-6  # Adam loop: loose reference
    for key, value in metrics.items():
        ref = float(golden[f"depth{case}__{align}__{key}"])
        assert float(value) == pytest.approx(ref, rel=rel, abs=1e-7), key


def test_median_alignment_uses_the_lower_median():
    gt = torch.tensor([1.0, 2.0, 3.0, 4.0])
    pred = torch.ones(4)
    mask = torch.ones(4, dtype=torch.bool)
    # scale = lower median of gt/pred = 2 (the mean median would be 2.5); shift = lower median
    # of gt - 2 = [-1, 0, 1, 2] = 0, so every prediction becomes 2 and MAE = (1+0+1+2)/4.
    metrics = compute_depth_metrics(pred, gt, mask, align="median")
    assert float(metrics["MAE"]) == pytest.approx(1.0)


def test_depth_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="alignment"):
        compute_depth_metrics(torch.ones(2, 2), torch.ones(2, 2), align="mean")
    with pytest.raises(ValueError, match="shape"):
        compute_depth_metrics(torch.ones(2, 2, 1), torch.ones(2, 2))


@pytest.mark.parametrize("case", range(5))
def test_quantile_matches_upstream(golden, case):
    x = _t(golden, f"quantile{case}__x")
    for q in (50, 95, 25, 98):
        assert float(kthvalue_quantile(x, q / 100)) == float(golden[f"quantile{case}__q{q}"])


def test_quantile_rounds_half_to_even():
    x = torch.tensor([5.0, 0.0, 4.0, 1.0, 3.0, 2.0])
    assert float(kthvalue_quantile(x, 0.5)) == 2.0  # 0.5·5 = 2.5 → 2 (half to even) → 3rd value
    assert float(kthvalue_quantile(x, 0.7)) == 4.0  # 3.5 → 4
    with pytest.raises(ValueError):
        kthvalue_quantile(x, 1.5)


@pytest.mark.parametrize("case", range(3))
def test_umeyama_matches_upstream(golden, case):
    rot, trans, scale = umeyama_alignment(_t(golden, f"umeyama{case}__x"),
                                          _t(golden, f"umeyama{case}__y"))
    np.testing.assert_allclose(rot.numpy(), golden[f"umeyama{case}__R"], atol=1e-5)
    np.testing.assert_allclose(trans.numpy(), golden[f"umeyama{case}__t"], atol=1e-5)
    assert float(scale) == pytest.approx(float(golden[f"umeyama{case}__c"]), rel=1e-5)


def test_umeyama_recovers_an_exact_similarity():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    rot = _random_rotation(gen)
    y = 0.4 * rot @ x + torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    r, t, c = umeyama_alignment(x, y)
    torch.testing.assert_close(r, rot)
    torch.testing.assert_close(t, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    assert float(c) == pytest.approx(0.4)


def test_fit_sim3_outlier_round_removes_gross_outliers():
    gen = torch.Generator().manual_seed(4)
    pred = torch.randn(400, 3, generator=gen, dtype=torch.float64)
    truth = Sim3(_random_rotation(gen), torch.tensor([0.3, 0.1, -1.0], dtype=torch.float64),
                 torch.tensor(2.0, dtype=torch.float64))
    gt = truth.apply_points(pred)
    gt[:10] += 50.0  # 2.5 % gross outliers, all beyond the 95th-percentile residual
    plain = fit_sim3(pred, gt, outlier_rounds=0)
    robust = fit_sim3(pred, gt, outlier_rounds=1)
    assert abs(float(plain.scale) - 2.0) > 1e-2
    assert float(robust.scale) == pytest.approx(2.0, abs=1e-9)
    torch.testing.assert_close(robust.rotation, truth.rotation)


def test_aggregate_metrics_drops_nans_and_reports_unbiased_std():
    out = aggregate_metrics([{"a": 1.0, "b": math.nan}, {"a": 3.0, "b": math.nan}, {"a": 5.0,
                                                                                   "b": math.nan}])
    assert out == {"a": 3.0, "a_std": 2.0}
    with pytest.raises(ValueError):
        aggregate_metrics([])
