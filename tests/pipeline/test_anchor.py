"""TF anchoring: a window's predicted camera poses aligned to the cameras' TF poses.

Reconstructions come from ``ground_truth_unscaled`` (each window at its own scale, camera
rotations perturbed by N(0, 0.05°) and centres by N(0, 2 mm) per axis); TF is the rig's true
camera poses in the scene frame (the robot's ``odom``). The true ``world_from_window`` is the
backend's draw. Bounds are 5 standard deviations of what that noise leaves after averaging
over the window's views.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.geometry.rotations import rotation_angle
from dvlt_core.inference import Reconstructor
from dvlt_ros.pipeline import WindowConfig
from dvlt_ros.pipeline.anchor import (
    Anchor,
    AnchorOptions,
    AnchorRefused,
    anchor_reconstruction,
    anchor_to_tf,
)

TIMES = (0.0, 0.4, 0.8, 1.2)
IMG_SIZE = 112
POSITION_NOISE = 0.002
ROTATION_NOISE = math.radians(0.05)
NO_NOISE = {"rotation_noise_deg": 0.0, "position_noise": 0.0, "depth_noise": 0.0, "ray_noise": 0.0}


@pytest.fixture(scope="module")
def windows(pipeline_rig, make_rig_windows):
    config = WindowConfig(max_timesteps=3, max_views=9, keyframe_min_spacing_ns=0)
    return make_rig_windows(pipeline_rig, TIMES, config)


def _reconstructions(rig, windows, **noise):
    backend = GroundTruthUnscaledBackend.for_rig(rig, TIMES, img_size=IMG_SIZE, **noise)
    out = []
    for window in windows:
        recon = Reconstructor(backend).reconstruct([f.rgb for f in window.frames])
        out.append((window, recon, backend.last_draw))
    return out


@pytest.fixture(scope="module")
def exact(pipeline_rig, windows):
    return _reconstructions(pipeline_rig, windows, **NO_NOISE)


@pytest.fixture(scope="module")
def noisy(pipeline_rig, windows):
    return _reconstructions(pipeline_rig, windows)


def _tf(rig, window):
    return [rig.camera_pose(f.camera, f.stamp_ns * 1e-9) for f in window.frames]


def _errors(anchor: Anchor, draw) -> tuple[float, float, float]:
    """Rotation (rad), relative scale and translation (m) error against the truth."""
    truth, got = draw.scene_from_window(), anchor.world_from_window
    rotation = rotation_angle(got.rotation, truth.rotation)
    scale = abs(math.log(got.scale / truth.scale))
    return float(rotation), scale, float(np.linalg.norm(got.translation - truth.translation))


def test_exact_poses_give_the_exact_similarity(pipeline_rig, exact):
    for window, recon, draw in exact:
        anchor = anchor_reconstruction(recon, _tf(pipeline_rig, window))
        assert isinstance(anchor, Anchor) and anchor.rejected == () and not anchor.scale_fixed
        rotation, scale, translation = _errors(anchor, draw)
        assert rotation < 1e-6 and scale < 1e-6 and translation < 1e-6
        assert anchor.rms_position < 1e-6 and anchor.max_rotation_deg < 1e-4
        # SE(3) when the scale is known (metric), same placement.
        metric = anchor_reconstruction(
            recon, _tf(pipeline_rig, window), fixed_scale=draw.metres_per_unit
        )
        assert metric.scale_fixed and metric.world_from_window.scale == draw.metres_per_unit
        np.testing.assert_allclose(
            metric.world_from_window.matrix(), anchor.world_from_window.matrix(), atol=1e-6
        )


def test_noisy_windows_land_on_tf(pipeline_rig, noisy):
    for window, recon, draw in noisy:
        tf = _tf(pipeline_rig, window)
        anchor = anchor_reconstruction(recon, tf)
        n = len(anchor.views)
        assert anchor.rejected == ()
        centres = np.stack([p[:3, 3] for p in tf])
        spread = math.sqrt(np.square(centres - centres.mean(0)).sum(1).mean())
        rotation, scale, translation = _errors(anchor, draw)
        # Rotation: the rotation average alone has a per-axis error of σ_r / sqrt(n).
        assert rotation < 5 * math.sqrt(3) * ROTATION_NOISE / math.sqrt(n)
        # Scale: centre noise over the TF spread, averaged over n views.
        assert scale < 5 * POSITION_NOISE / (spread * math.sqrt(n))
        # Every anchored camera centre lands within its own perturbation of the TF one.
        assert anchor.position_residuals.max() < 5 * math.sqrt(3) * POSITION_NOISE
        assert translation < 5 * math.sqrt(3) * POSITION_NOISE + 2.0 * rotation + 2.0 * scale
        # And the published pose of the reference camera: its true pose within the same.
        reference = anchor.world_from_window.apply_c2w(recon.views[0].extrinsics_c2w)
        assert np.linalg.norm(reference[:3, 3] - tf[0][:3, 3]) < 5 * math.sqrt(3) * POSITION_NOISE


def test_one_view_needs_a_known_scale(pipeline_rig, exact):
    window, recon, draw = exact[0]
    tf = _tf(pipeline_rig, window)
    only_first = [tf[0]] + [None] * (len(tf) - 1)
    refused = anchor_reconstruction(recon, only_first)
    assert isinstance(refused, AnchorRefused) and "scale is not observable" in refused.reason
    anchor = anchor_reconstruction(recon, only_first, fixed_scale=draw.metres_per_unit)
    assert anchor.views == (0,)
    rotation, _, translation = _errors(anchor, draw)
    assert rotation < 1e-6 and translation < 1e-6


def test_two_views_are_collinear_and_rotation_comes_from_the_rotations(pipeline_rig, exact):
    window, recon, draw = exact[0]
    tf = _tf(pipeline_rig, window)
    two = tf[:2] + [None] * (len(tf) - 2)
    anchor = anchor_reconstruction(recon, two)
    rotation, scale, translation = _errors(anchor, draw)
    assert anchor.views == (0, 1)
    assert rotation < 1e-6 and scale < 1e-6 and translation < 1e-6


def test_a_wrong_tf_pose_and_a_failed_fit_are_left_out(pipeline_rig, noisy):
    window, recon, draw = noisy[-1]
    tf = _tf(pipeline_rig, window)
    tf[4] = tf[4].copy()
    tf[4][:3, 3] += [0.5, -0.3, 0.2]  # stale or wrong TF
    views = list(recon.views)
    views[7] = dataclasses.replace(views[7], pose_valid=False)
    anchor = anchor_reconstruction(dataclasses.replace(recon, views=views), tf)
    assert anchor.rejected == (4,) and 7 not in anchor.views and len(anchor.views) == 7
    n = len(anchor.views)
    rotation, _, _ = _errors(anchor, draw)
    assert rotation < 5 * math.sqrt(3) * ROTATION_NOISE / math.sqrt(n)
    assert anchor.position_residuals.max() < 5 * math.sqrt(3) * POSITION_NOISE


def test_degenerate_and_bad_input():
    poses = np.tile(np.eye(4), (3, 1, 1))
    assert "no view" in anchor_to_tf(poses * np.nan, poses).reason
    same_place = anchor_to_tf(poses, poses)
    assert isinstance(same_place, AnchorRefused) and "not observable" in same_place.reason
    # Predicted motion opposite to TF's, rotations agreeing: no positive scale exists.
    predicted, measured = poses.copy(), poses.copy()
    measured[:, :3, 3] = [[0, 0, 0], [1, 0, 0], [2, 0.1, 0]]
    predicted[:, :3, 3] = -measured[:, :3, 3]
    opposite = anchor_to_tf(predicted, measured, options=AnchorOptions(rotation_sigma_deg=1e-3))
    assert isinstance(opposite, AnchorRefused) and "opposite" in opposite.reason
    with pytest.raises(ValueError, match="pose stacks"):
        anchor_to_tf(poses[:, :3], poses[:, :3])
    with pytest.raises(ValueError, match="fixed_scale"):
        anchor_to_tf(poses, poses, fixed_scale=0.0)
    with pytest.raises(ValueError, match="weights"):
        anchor_to_tf(poses, poses, weights=np.array([1.0, -1.0, 1.0]))
