"""ground_truth_unscaled: the synthetic scene at an unknown scale per window, with noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvlt_core.backends import create_backend
from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.geometry.rotations import rotation_angle
from dvlt_core.inference import Reconstructor
from dvlt_core.synthetic import default_rig

TIMES = (0.0, 0.4, 0.8)
IMG_SIZE = 112


@pytest.fixture(scope="module")
def rig():
    return default_rig(160, 120, num_cameras=3)


def _backend(rig, **options) -> GroundTruthUnscaledBackend:
    return GroundTruthUnscaledBackend.for_rig(rig, TIMES, img_size=IMG_SIZE, **options)


def _window(rig, *times):
    return [view for t in times for view in rig.snapshot(t)]


def test_noise_free_windows_are_the_scene_at_the_drawn_scale(rig):
    backend = _backend(
        rig, rotation_noise_deg=0.0, position_noise=0.0, depth_noise=0.0, ray_noise=0.0
    )
    assert not backend.metric
    views = _window(rig, 0.4, 0.0)
    recon = Reconstructor(backend).reconstruct([v.image for v in views])
    scale = backend.last_draw.units_per_metre
    assert 0.2 <= scale <= 5.0
    reference = np.linalg.inv(views[0].c2w)
    for truth, got in zip(views, recon.views, strict=True):
        gt = reference @ truth.c2w
        assert rotation_angle(got.extrinsics_c2w[:3, :3], gt[:3, :3]) < 1e-5
        np.testing.assert_allclose(got.extrinsics_c2w[:3, 3], scale * gt[:3, 3], atol=1e-5 * scale)
        ok = got.valid & (truth.depth > 0)
        assert np.median(got.depth[ok] / truth.depth[ok]) == pytest.approx(scale, rel=1e-4)


def test_windows_get_their_own_seeded_scale(rig):
    backend = _backend(rig)
    draws = []
    for times in [(0.0,), (0.4, 0.0), (0.8, 0.4), (0.0,)]:
        Reconstructor(backend).reconstruct([v.image for v in _window(rig, *times)])
        draws.append(backend.last_draw.units_per_metre)
    assert len(set(draws[:3])) == 3
    assert draws[3] == draws[0]  # the same images: the same draw
    other_seed = _backend(rig, seed=1)
    Reconstructor(other_seed).reconstruct([v.image for v in _window(rig, 0.0)])
    assert other_seed.last_draw.units_per_metre != draws[0]


def test_default_noise_reaches_the_fitted_cameras_and_depth(rig):
    """What a consumer sees under the documented defaults: camera centres off by about
    ``position_noise`` per axis (plus the view-0 frame's own error), depth off by 1 %."""
    backend = _backend(rig)
    views = _window(rig, 0.8, 0.4, 0.0)
    recon = Reconstructor(backend, pose_weights="confidence").reconstruct(
        [v.image for v in views]
    )
    draw = backend.last_draw
    assert all(v.pose_valid for v in recon.views)
    # The fitted centres are the perturbed cameras' (ray origins carry no noise: float32
    # rounding of coordinates of a few window units only).
    window_to_scene = draw.scene_from_window()
    for got, perturbed in zip(recon.views, draw.c2w, strict=True):
        centre = window_to_scene.apply_points(got.extrinsics_c2w[:3, 3])
        assert np.linalg.norm(centre - perturbed[:3, 3]) < 1e-5  # metres
    # The perturbations themselves: 9 views x 3 axes of N(0, 2 mm) and N(0, 0.05 deg).
    true = np.stack([v.c2w for v in views])
    offsets = np.einsum("nji,nj->ni", true[:, :3, :3], draw.c2w[:, :3, 3] - true[:, :3, 3])
    assert 0.4 * 0.002 < offsets.std() < 1.8 * 0.002  # chi-square, 27 dof: far outside 1e-6
    angles = rotation_angle(draw.c2w[:, :3, :3], true[:, :3, :3])
    assert math.radians(0.05) * 0.3 < np.sqrt(np.mean(angles**2) / 3) < math.radians(0.05) * 2
    # Depth: per-pixel log-normal noise of 1 % on the network canvas, unbiased in the median;
    # bilinear resampling to the original pixels averages neighbours (a robust std between
    # 1/2 and 1 of the canvas noise) and blends depth edges (the tails, hence MAD).
    ratios = []
    for truth, got in zip(views, recon.views, strict=True):
        ok = got.valid & (truth.depth > 0) & (got.depth > 0)
        ratios.append(np.log(got.depth[ok] / truth.depth[ok] / draw.units_per_metre))
    ratios = np.concatenate(ratios)
    assert abs(np.median(ratios)) < 5 * 0.01 / math.sqrt(ratios.size) + 1e-3
    robust_std = 1.4826 * np.median(np.abs(ratios - np.median(ratios)))
    assert 0.4 * 0.01 < robust_std < 1.1 * 0.01


def test_registered_and_refuses_bad_settings(rig):
    backend = create_backend("ground_truth_unscaled", scene=rig.scene, img_size=IMG_SIZE)
    assert isinstance(backend, GroundTruthUnscaledBackend) and not backend.metric
    with pytest.raises(ValueError, match="scene="):
        create_backend("ground_truth_unscaled")
    with pytest.raises(ValueError, match="scale_range"):
        GroundTruthUnscaledBackend(rig.scene, scale_range=(0.0, 2.0))
    with pytest.raises(ValueError, match="depth_noise"):
        GroundTruthUnscaledBackend(rig.scene, depth_noise=-0.1)
