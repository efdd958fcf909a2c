"""Metric scale from rig baselines, odometry and depth, on up-to-scale noisy reconstructions.

The reconstructions come from ``ground_truth_unscaled`` through the real Reconstructor: each
window at its own random scale, camera centres perturbed by N(0, 2 mm) per axis, depth by
1 % per pixel. Tolerances follow from that noise: a constraint over a known length ``b``
has a relative error of about ``sqrt(2) · 2 mm / b`` (two perturbed centres), and a median
of ``n`` constraints ``1.2533 · σ / sqrt(n)``; the bounds are 5 of those.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.inference import Reconstructor
from dvlt_ros.pipeline import WindowConfig
from dvlt_ros.pipeline.scale import (
    MeasuredDepth,
    ScaleEstimate,
    ScaleOptions,
    ScaleSmoother,
    ScaleUnavailable,
    choose_scale,
    depth_scale,
    odometry_scale,
    rig_scale,
    robust_scale,
)

TIMES = (0.0, 0.4, 0.8, 1.2, 1.6)
IMG_SIZE = 112
POSITION_NOISE = 0.002  # the backend's default, metres per axis
MEDIAN = 1.2533


def _backend(rig, **noise) -> GroundTruthUnscaledBackend:
    return GroundTruthUnscaledBackend.for_rig(rig, TIMES, img_size=IMG_SIZE, **noise)


NO_NOISE = {"rotation_noise_deg": 0.0, "position_noise": 0.0, "depth_noise": 0.0, "ray_noise": 0.0}


def _reconstruct(backend, windows):
    """(window, reconstruction, true metres per unit) per window."""
    out = []
    for window in windows:
        recon = Reconstructor(backend).reconstruct([f.rgb for f in window.frames])
        out.append((window, recon, backend.last_draw.metres_per_unit))
    return out


@pytest.fixture(scope="module")
def windows3(pipeline_rig, make_rig_windows):
    """Windows of up to three snapshots over TIMES."""
    config = WindowConfig(max_timesteps=3, max_views=9, keyframe_min_spacing_ns=0)
    return make_rig_windows(pipeline_rig, TIMES, config)


@pytest.fixture(scope="module")
def noisy(pipeline_rig, windows3):
    return _reconstruct(_backend(pipeline_rig), windows3)


@pytest.fixture(scope="module")
def exact(pipeline_rig, windows3):
    return _reconstruct(_backend(pipeline_rig, **NO_NOISE), windows3)


@pytest.fixture(scope="module")
def mounts(pipeline_rig):
    """base_from_camera keyed by optical frame id, as TF gives it."""
    return {
        pipeline_rig.camera(n).optical_frame: pipeline_rig.camera(n).base_from_camera
        for n in pipeline_rig.names
    }


def _odometry(rig):
    return lambda stamp_ns: rig.world_from_base(stamp_ns * 1e-9)


def _relative_error(estimate, truth) -> float:
    assert isinstance(estimate, ScaleEstimate), estimate
    return abs(math.log(estimate.metres_per_unit / truth))


def _pair_sigma(lengths) -> float:
    """Relative error of one constraint over the shortest of ``lengths`` (metres)."""
    return math.sqrt(2) * POSITION_NOISE / min(lengths)


# -- the robust combiner -------------------------------------------------------------------


def test_robust_scale_rejects_outliers_and_reports_spread():
    rng = np.random.default_rng(0)
    predicted = rng.uniform(0.5, 2.0, 40)
    known = 3.0 * predicted * np.exp(rng.normal(0.0, 0.01, 40))
    known[:5] *= 1.5  # 5 wrong constraints
    est = robust_scale(known, predicted, "rig")
    assert est.rejected == 5 and est.constraints == 35
    # 35 inliers of 1 % noise: the median is within 5 standard errors.
    assert _relative_error(est, 3.0) < 5 * MEDIAN * 0.01 / math.sqrt(35)
    assert 0.5 * 0.01 < est.spread < 1.5 * 0.01
    assert est.standard_error == pytest.approx(MEDIAN * est.spread / math.sqrt(35))


def test_robust_scale_refuses_what_it_cannot_trust():
    none = robust_scale(np.array([1.0, np.nan, -2.0]), np.array([0.0, 1.0, 1.0]), "rig")
    assert isinstance(none, ScaleUnavailable) and "0 usable" in none.reason
    scattered = robust_scale(np.array([1.0, 2.0, 4.0, 8.0]), np.ones(4), "depth")
    assert isinstance(scattered, ScaleUnavailable) and "disagree" in scattered.reason
    few = robust_scale(np.ones(2), np.ones(2), "rig", ScaleOptions(min_constraints=3))
    assert isinstance(few, ScaleUnavailable) and few.constraints == 2
    single = robust_scale(np.array([2.0]), np.array([1.0]), "rig")
    assert single.metres_per_unit == 2.0 and math.isnan(single.spread)


# -- rig -------------------------------------------------------------------------------------


def test_rig_scale_is_exact_without_noise(exact, mounts):
    for window, recon, truth in exact:
        est = rig_scale(window, recon, mounts)
        assert est.constraints == 3 * len(set(window.timesteps))
        assert _relative_error(est, truth) < 1e-5


def test_rig_scale_under_pose_noise(noisy, mounts, pipeline_rig):
    centres = [m[:3, 3] for m in mounts.values()]
    baselines = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :]]
    errors = []
    for window, recon, truth in noisy:
        est = rig_scale(window, recon, mounts)
        bound = 5 * MEDIAN * _pair_sigma(baselines) / math.sqrt(est.constraints + est.rejected)
        errors.append(_relative_error(est, truth))
        assert errors[-1] < bound, (errors[-1], bound)
    # Windows draw independent noise: their mean error shrinks with their number.
    sigma_window = MEDIAN * _pair_sigma(baselines) / math.sqrt(3)
    assert np.mean(errors) < 5 * sigma_window / math.sqrt(len(errors)) + sigma_window


def test_rig_scale_ignores_a_failed_view_and_rejects_a_wrong_one(exact, mounts):
    window, recon, truth = exact[-1]
    assert len(set(window.timesteps)) == 3
    views = list(recon.views)
    views[0] = dataclasses.replace(views[0], pose_valid=False)
    wrong = views[4].extrinsics_c2w.copy()
    wrong[:3, 3] += 0.5 * (wrong[:3, 3] - views[3].extrinsics_c2w[:3, 3])  # 50 % longer
    views[4] = dataclasses.replace(views[4], extrinsics_c2w=wrong)
    est = rig_scale(window, dataclasses.replace(recon, views=views), mounts)
    assert est.constraints + est.rejected == 7  # 3 pairs per snapshot, 2 lost with view 0
    assert est.rejected == 2 and _relative_error(est, truth) < 1e-5


def test_rig_scale_says_why_it_has_no_estimate(exact, mounts):
    window, recon, _ = exact[0]
    missing = rig_scale(window, recon, {"other_frame": np.eye(4)})
    assert isinstance(missing, ScaleUnavailable)
    assert "cam_front_left_optical_frame" in missing.reason
    close = rig_scale(window, recon, mounts, min_baseline=1.0)
    assert isinstance(close, ScaleUnavailable) and "1.0 m apart" in close.reason
    by_name = {name.removesuffix("_optical_frame"): m for name, m in mounts.items()}
    assert isinstance(rig_scale(window, recon, by_name, key="camera"), ScaleEstimate)


# -- odometry ----------------------------------------------------------------------------------


def test_odometry_scale_is_exact_without_noise(exact, mounts, pipeline_rig):
    first, *later = exact
    none = odometry_scale(first[0], first[1], _odometry(pipeline_rig), mounts)
    assert isinstance(none, ScaleUnavailable) and "fewer than two" in none.reason
    for window, recon, truth in later:
        est = odometry_scale(window, recon, _odometry(pipeline_rig), mounts)
        steps = len(set(window.timesteps))
        assert est.constraints == 3 * steps * (steps - 1) // 2
        assert _relative_error(est, truth) < 1e-5


def test_odometry_scale_under_pose_noise(noisy, mounts, pipeline_rig):
    step_length = 0.3 * 0.4 * 0.9  # speed x snapshot spacing, less the lever's turn
    for window, recon, truth in noisy[1:]:
        est = odometry_scale(window, recon, _odometry(pipeline_rig), mounts)
        bound = 5 * MEDIAN * _pair_sigma([step_length]) / math.sqrt(est.constraints + est.rejected)
        assert _relative_error(est, truth) < bound


def test_odometry_scale_needs_motion(exact, mounts, pipeline_rig):
    window, recon, _ = exact[-1]
    standing = odometry_scale(window, recon, lambda stamp: np.eye(4), mounts)
    assert isinstance(standing, ScaleUnavailable) and "under min_motion" in standing.reason
    stamps = {f.stamp_ns: pipeline_rig.world_from_base(f.stamp_ns * 1e-9) for f in window.frames}
    newest = window.frames[0].stamp_ns
    only_newest = {newest: stamps[newest]}
    assert isinstance(odometry_scale(window, recon, only_newest, mounts), ScaleUnavailable)
    assert isinstance(odometry_scale(window, recon, stamps, mounts), ScaleEstimate)


# -- depth -------------------------------------------------------------------------------------


def test_depth_scale_with_registered_depth(noisy, pipeline_rig):
    for window, recon, truth in noisy[:2]:
        sensors = [
            MeasuredDepth(pipeline_rig.render(f.camera, f.stamp_ns * 1e-9).depth)
            for f in window.frames
        ]
        est = depth_scale(recon, sensors)
        # 1 % per-pixel noise over tens of thousands of pixels, plus the bias of resampling
        # the network depth to the original pixels (z-depth is convex along a plane), which
        # is below the 3e-4 that bounds 90 % of its pixels (test_ground_truth_backend).
        assert _relative_error(est, truth) < 5 * est.standard_error + 3e-4
        assert 0.003 < est.spread < 0.015


def test_depth_scale_reprojects_a_depth_camera_of_its_own(exact, pipeline_rig):
    """A depth camera 4 cm beside the colour camera, turned 3 degrees, at half resolution."""
    window, recon, truth = exact[1]
    k_depth = np.array([[70.0, 0.0, 39.5], [0.0, 70.0, 29.5], [0.0, 0.0, 1.0]])
    angle = math.radians(3.0)
    colour_from_depth = np.eye(4)
    colour_from_depth[:3, :3] = [
        [math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]
    ]
    colour_from_depth[:3, 3] = [0.04, 0.0, 0.0]
    sensors = []
    for frame in window.frames:
        c2w = pipeline_rig.camera_pose(frame.camera, frame.stamp_ns * 1e-9) @ colour_from_depth
        depth = pipeline_rig.scene.depth(k_depth, c2w, 60, 80)
        sensors.append(MeasuredDepth.from_image((depth * 1000).round().astype(np.uint16),
                                                k_depth, colour_from_depth))
    est = depth_scale(recon, sensors)
    # Millimetre quantisation and the nearest-pixel lookup (half a pixel of depth gradient,
    # either sign) scatter single pixels by ~1 %; their median is unbiased.
    assert _relative_error(est, truth) < 5 * est.standard_error + 1e-3
    assert est.constraints > 1000


def test_depth_scale_refusals(exact):
    recon = exact[0][1]
    none = depth_scale(recon, [None] * len(recon))
    assert isinstance(none, ScaleUnavailable) and "no view" in none.reason
    empty = depth_scale(recon, [MeasuredDepth(np.zeros((120, 160)))] + [None] * (len(recon) - 1))
    assert isinstance(empty, ScaleUnavailable) and "500 needed" in empty.reason
    with pytest.raises(ValueError, match="give the depth image's k"):
        depth_scale(recon, [MeasuredDepth(np.ones((60, 80)))] * len(recon))
    with pytest.raises(ValueError, match="depth entries"):
        depth_scale(recon, [])
    with pytest.raises(ValueError, match="16UC1"):
        MeasuredDepth.from_image(np.ones((4, 4), np.int32))


# -- auto and smoothing --------------------------------------------------------------------------


def _estimate(source, value, se=0.002, constraints=10):
    return ScaleEstimate(source, value, se * math.sqrt(constraints) / MEDIAN, se, constraints)


def test_auto_prefers_rig_then_depth_then_odometry_and_flags_conflicts():
    outcomes = [_estimate("odometry", 2.0), _estimate("depth", 2.3), _estimate("rig", 2.01)]
    choice = choose_scale(outcomes)
    assert choice.estimate.source == "rig" and choice.conflicts == ("depth",)
    assert "disagrees with depth" in choice.summary
    fallback = choose_scale([ScaleUnavailable("rig", "no pair"), _estimate("odometry", 2.0)])
    assert fallback.estimate.source == "odometry" and fallback.conflicts == ()
    nothing = choose_scale([ScaleUnavailable("rig", "no pair"), ScaleUnavailable("depth", "x")])
    assert nothing.estimate is None and "rig: no pair" in nothing.summary


def test_smoother_follows_the_world_and_gates_outliers():
    """Metres per world unit is 2; every window has its own scale relative to the world
    (``reference``). Measurements carry 1 % noise; window 6 is 30 % off."""
    rng = np.random.default_rng(1)
    smoother = ScaleSmoother(history=9)
    assert smoother.update(ScaleUnavailable("rig", "no pair")) is None
    results = []
    for i in range(20):
        reference = float(np.exp(rng.uniform(-1.5, 1.5)))
        value = 2.0 * reference * math.exp(rng.normal(0.0, 0.01)) * (1.3 if i == 6 else 1.0)
        result = smoother.update(_estimate("rig", value, se=0.003), reference)
        results.append((result, reference))
    assert not results[6][0].accepted and "gate" in results[6][0].reason
    assert all(r.accepted for i, (r, _) in enumerate(results) if i != 6)
    for result, reference in results[9:]:
        # The median of 9 windows of 1 % noise: 5 standard errors.
        assert abs(math.log(result.metres_per_unit / (2.0 * reference))) < 5 * MEDIAN * 0.01 / 3
    held = smoother.update(ScaleUnavailable("rig", "no pair"), reference=4.0)
    assert not held.accepted and held.metres_per_unit == pytest.approx(
        results[-1][0].metres_per_unit / results[-1][1] * 4.0
    )


def test_smoother_restarts_when_the_scale_really_changes():
    smoother = ScaleSmoother(reset_after=3)
    for _ in range(5):
        smoother.update(_estimate("odometry", 1.0))
    states = [smoother.update(_estimate("odometry", 1.5)) for _ in range(3)]
    assert [s.accepted for s in states] == [False, False, True]
    assert states[-1].metres_per_unit == 1.5 and states[-1].windows == 1
