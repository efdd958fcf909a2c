"""Pose fit with known intrinsics: rotation and translation only, robust to outlier patches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.geometry import compute_world_rays, rays_to_pose
from dvlt_core.geometry.rotations import rotation_angle, rotation_from_vector
from dvlt_core.inference import Reconstructor
from dvlt_core.synthetic import default_rig

HEIGHT, WIDTH, PATCH = 126, 168, 14
NUM_PATCHES = (HEIGHT // PATCH) * (WIDTH // PATCH)
# float32 rays: unit-vector components carry a relative rounding of ~6e-8; averaged over the
# patches the fitted rotation is good to a few times that. 1e-6 rad leaves a wide margin and
# is still 3000x below the 0.5 px / f ~ 3e-3 rad a half-pixel convention slip would cost.
EXACT_ROTATION_RAD = 1e-6


def _cameras(frames: int, seed: int, spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Random camera-to-world poses (facing anywhere for large ``spread``) and intrinsics
    with off-centre principal points (pixel-centre convention)."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (frames, 1, 1))
    c2w[:, :3, :3] = rotation_from_vector(rng.normal(0.0, spread, (frames, 3)))
    c2w[:, :3, 3] = rng.normal(size=(frames, 3))
    k = np.tile(np.eye(3), (frames, 1, 1))
    k[:, 0, 0] = rng.uniform(100, 220, frames)
    k[:, 1, 1] = k[:, 0, 0] * rng.uniform(0.98, 1.02, frames)
    k[:, 0, 2] = WIDTH / 2 + rng.uniform(-12, 12, frames)
    k[:, 1, 2] = HEIGHT / 2 + rng.uniform(-10, 10, frames)
    return c2w, k


def _rays(c2w: np.ndarray, k: np.ndarray) -> torch.Tensor:
    return compute_world_rays(torch.from_numpy(c2w), torch.from_numpy(k), HEIGHT, WIDTH)[None]


def _rotation_errors(fit, c2w: np.ndarray) -> np.ndarray:
    return rotation_angle(fit.extrinsics_c2w[0].double().numpy()[:, :3, :3], c2w[:, :3, :3])


def test_clean_rays_give_the_exact_pose_and_keep_k():
    c2w, k = _cameras(4, seed=0, spread=2.0)  # some cameras look backwards
    fit = rays_to_pose(_rays(c2w, k).float(), intrinsics=k)
    assert fit.valid.all() and (fit.num_inliers == NUM_PATCHES).all()
    assert (_rotation_errors(fit, c2w) < EXACT_ROTATION_RAD).all()
    # Translations are means of float32 origins of magnitude ~1.
    np.testing.assert_allclose(fit.extrinsics_c2w[0, :, :3, 3].numpy(), c2w[:, :3, 3], atol=1e-6)
    np.testing.assert_allclose(fit.intrinsics[0].numpy(), k, rtol=1e-7)


def test_one_k_broadcasts_to_every_frame():
    c2w, k = _cameras(3, seed=1)
    k[:] = k[0]
    fit = rays_to_pose(_rays(c2w, k).float(), intrinsics=torch.from_numpy(k[0]))
    assert (_rotation_errors(fit, c2w) < EXACT_ROTATION_RAD).all()


def _weakest_lever(k: np.ndarray, keep: np.ndarray) -> float:
    """``sqrt(min Σ (1 − b_z²))`` over frames, for the unit bearings ``b`` of the kept patch
    centres: Wahba's information about the rotation about the optical axis, its weakest."""
    rows, cols = np.mgrid[0 : HEIGHT // PATCH, 0 : WIDTH // PATCH] * PATCH + PATCH / 2
    pixels = np.stack([cols, rows, np.ones_like(cols)], -1).reshape(-1, 3)
    bearings = pixels @ np.linalg.inv(k).swapaxes(-1, -2)
    bearings /= np.linalg.norm(bearings, axis=-1, keepdims=True)
    return math.sqrt(((1 - bearings[..., 2] ** 2) * keep).sum(-1).min())


def test_noise_and_outlier_patches():
    """Per-pixel direction noise plus 30 % of the patches replaced by garbage directions.

    A patch summary averages 16 lattice samples, so a patch's bearing error is at most
    ``sigma / 4`` per tangent component (the directions have length >= 1). Wahba's rotation
    error about its weakest axis then has a standard deviation of ``(sigma / 4) / lever``
    (:func:`_weakest_lever` over the inlier patches); the bound is 6 of those. RANSAC must not
    count more inliers than there are clean patches.
    """
    sigma, frames = 0.01, 3
    c2w, k = _cameras(frames, seed=2)
    rays = _rays(c2w, k)
    gen = torch.Generator().manual_seed(0)
    rays[..., :3] += sigma * torch.randn(rays[..., :3].shape, generator=gen, dtype=rays.dtype)
    grid = (HEIGHT // PATCH, WIDTH // PATCH)
    garbage = torch.rand((frames, *grid), generator=gen) < 0.3
    pixel_garbage = garbage.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    random_dirs = torch.randn((frames, HEIGHT, WIDTH, 3), generator=gen, dtype=rays.dtype)
    rays[0, ..., :3] = torch.where(pixel_garbage[..., None], random_dirs, rays[0, ..., :3])
    fit = rays_to_pose(rays.float(), intrinsics=k)
    keep = ~garbage.flatten(1).numpy()
    bound = 6 * (sigma / 4) / _weakest_lever(k, keep)
    errors = _rotation_errors(fit, c2w)
    assert fit.valid.all()
    assert (errors < bound).all(), (errors, bound)
    assert (fit.num_inliers[0].numpy() <= keep.sum(-1)).all()


def test_frames_without_usable_rays_are_flagged_not_crashed():
    c2w, k = _cameras(2, seed=3)
    weights = torch.ones((1, 2, HEIGHT, WIDTH))
    weights[0, 1] = 0.0
    fit = rays_to_pose(_rays(c2w, k).float(), weights, intrinsics=k)
    assert fit.valid.tolist() == [[True, False]]
    assert torch.isfinite(fit.extrinsics_c2w).all()
    np.testing.assert_allclose(fit.extrinsics_c2w[0, 1].numpy(), np.eye(4), atol=1e-7)


@pytest.mark.parametrize(
    ("intrinsics", "message"),
    [
        (np.eye(2), "must be"),
        (np.tile(np.eye(3), (5, 1, 1)), "broadcast"),
        (np.diag([np.nan, 1.0, 1.0]), "NaN"),
        (np.diag([-1.0, 1.0, 1.0]), "positive focal"),
        (np.array([[1.0, 0, 0], [0, 1, 0], [0.1, 0, 1]]), "last row"),
    ],
)
def test_bad_intrinsics_are_refused(intrinsics, message):
    c2w, k = _cameras(2, seed=4)
    with pytest.raises(ValueError, match=message):
        rays_to_pose(_rays(c2w, k).float(), intrinsics=intrinsics)


def test_upstream_mode_refuses_known_intrinsics():
    c2w, k = _cameras(1, seed=5)
    with pytest.raises(ValueError, match="robust"):
        rays_to_pose(_rays(c2w, k).float(), mode="upstream", intrinsics=k)


def test_reconstructor_uses_known_k_for_pose_depth_and_points():
    """Through the real preprocessing (resize + crop): the K of the original image is mapped
    to the network canvas, the pose comes out exact and the returned K is the given one."""
    rig = default_rig(160, 120, num_cameras=3)
    backend = GroundTruthBackend.for_rig(rig, [0.0, 0.4], img_size=112)
    views = rig.snapshot(0.4) + rig.snapshot(0.0)
    known = [v.k for v in views]
    known[1] = None  # mixed: this view's K is estimated
    recon = Reconstructor(backend).reconstruct([v.image for v in views], intrinsics=known)
    reference = np.linalg.inv(views[0].c2w)
    for i, (truth, got) in enumerate(zip(views, recon.views, strict=True)):
        assert got.pose_valid
        gt = reference @ truth.c2w
        assert rotation_angle(got.extrinsics_c2w[:3, :3], gt[:3, :3]) < 1e-5
        np.testing.assert_allclose(got.extrinsics_c2w[:3, 3], gt[:3, 3], atol=1e-5)
        # Known K comes back to float64 rounding; the estimated one to the fit's accuracy.
        np.testing.assert_allclose(got.intrinsics, truth.k, atol=1e-9 if i != 1 else 1e-3)
    with pytest.raises(ValueError, match="robust"):
        Reconstructor(backend, pose_mode="upstream").reconstruct(
            [views[0].image], intrinsics=[views[0].k]
        )
    with pytest.raises(ValueError, match="intrinsics"):
        Reconstructor(backend).reconstruct([views[0].image], intrinsics=[])
