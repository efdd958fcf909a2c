"""Reconstruction assembly: synthetic cameras and depth of a known plane map back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.backends.base import BackendOutput, StageTimings
from dvlt_core.io.images import preprocess
from dvlt_core.result import build_reconstruction, unproject

NORMAL = np.array([0.1, -0.2, 1.0]) / np.linalg.norm([0.1, -0.2, 1.0])
OFFSET = 4.0  # plane: NORMAL . X = OFFSET


def _plane_depth(K, c2w, hw):
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    return (OFFSET - NORMAL @ c2w[:3, 3]) / (rays @ (c2w[:3, :3].T @ NORMAL))


def _camera(h, w, angle):
    K = np.array([[0.8 * w, 0, 0.5 * w + 3], [0, 0.8 * w, 0.5 * h - 2], [0, 0, 1.0]])
    c, s = np.cos(angle), np.sin(angle)
    c2w = np.eye(4)
    c2w[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    c2w[:3, 3] = [0.3, -0.1, 0.2]
    return K, c2w


def _synthetic(shapes, rotate):
    images = [np.zeros((*s, 3), np.uint8) for s in shapes]
    batch = preprocess(images, img_size=112, rotate_portrait=rotate)
    S = len(shapes)
    H, W = batch.images.shape[-2:]
    cams = [_camera(*s, angle=0.1 * i) for i, s in enumerate(shapes)]
    depth = np.zeros((1, S, H, W, 1), np.float32)
    K_net = np.zeros((S, 3, 3))
    c2w_net = np.zeros((S, 4, 4))
    for i, (t, (K, c2w)) in enumerate(zip(batch.transforms, cams, strict=True)):
        K_net[i] = t.intrinsics_to_network(K)
        c2w_net[i] = t.extrinsics_to_network(c2w)
        depth[0, i, ..., 0] = _plane_depth(K_net[i], c2w_net[i], (H, W))
    K_network_convention = K_net.copy()
    K_network_convention[:, :2, 2] += 0.5  # rays_to_pose puts pixel centres at u + 0.5
    raw = BackendOutput(
        rays=torch.zeros(1, S, H, W, 6),
        depth=torch.from_numpy(depth),
        depth_conf=torch.from_numpy(1.0 + depth[..., 0]),
        world_points=torch.zeros(1, S, H, W, 3),
        pose_enc=torch.zeros(1, S, 9),
        timings=StageTimings(1.0, [1.0], 1.0, 3.0),
    )
    return raw, c2w_net, K_network_convention, batch, images, cams


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("resolution", ["original", "network"])
def test_synthetic_cameras_round_trip(resolution, rotate):
    shapes = [(240, 320), (320, 240), (200, 330)]
    raw, c2w_net, K_net, batch, images, cams = _synthetic(shapes, rotate)
    recon = build_reconstruction(
        raw, c2w_net, K_net, np.ones(len(shapes), bool), batch, images,
        names=["a", "b", "c"], timestamps=[0.0, 0.5, 1.0], num_steps=1, pose_mode="upstream",
        resolution=resolution,
    )
    for view, (K, c2w), shape in zip(recon.views, cams, shapes, strict=True):
        np.testing.assert_allclose(view.extrinsics_c2w, c2w, atol=1e-12)
        on_plane = view.world_points[view.valid] @ NORMAL
        if resolution == "original":
            np.testing.assert_allclose(view.intrinsics, K, atol=1e-9)
            assert view.depth.shape == shape and view.image.shape == (*shape, 3)
            # Bilinear resampling of 1/(linear) depth: tiny curvature error only.
            expected = _plane_depth(K, c2w, shape)
            np.testing.assert_allclose(view.depth[view.valid], expected[view.valid], rtol=2e-3)
            np.testing.assert_allclose(on_plane, OFFSET, atol=2e-2)
            t = view.transform
            kept = np.prod(t.crop_hw) / np.prod(t.resized_hw)
            assert view.valid.mean() == pytest.approx(kept, abs=0.01)
        else:
            assert view.valid.all()
            np.testing.assert_allclose(on_plane, OFFSET, atol=1e-4)
            # The network crop is the resized image: its intrinsics are scaled originals.
            sx = view.depth.shape[1] / shape[1]
            assert view.intrinsics[0, 0] == pytest.approx(K[0, 0] * sx, rel=0.1)


def test_point_cloud_thresholds_and_colours():
    raw, c2w_net, K_net, batch, images, _ = _synthetic([(240, 320)], False)
    images[0][:] = (10, 20, 30)
    recon = build_reconstruction(
        raw, c2w_net, K_net, np.ones(1, bool), batch, images, names=["a"], timestamps=[0.0],
        num_steps=1, pose_mode="robust",
    )
    all_points, colors = recon.point_cloud(0.0)
    assert len(all_points) == recon.views[0].valid.sum()
    assert (colors == (10, 20, 30)).all()
    half, _ = recon.point_cloud("50%")
    assert abs(len(half) - len(all_points) / 2) <= 0.01 * len(all_points)
    cut = recon.confidence_threshold("50%")
    assert len(recon.point_cloud(cut)[0]) == len(half)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        recon.point_cloud("100%")


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("resolution", ["original", "network"])
def test_views_of_one_size_are_assembled_like_single_views(resolution, interpolation):
    # Views 0 and 2 share their preprocessing and are resampled and unprojected together.
    shapes = [(240, 320), (200, 330), (240, 320)]
    raw, c2w_net, K_net, batch, images, _ = _synthetic(shapes, False)
    assert batch.transforms[0] == batch.transforms[2] != batch.transforms[1]
    recon = build_reconstruction(
        raw, c2w_net, K_net, np.ones(3, bool), batch, images, names=["a", "b", "c"],
        timestamps=[0.0, 0.5, 1.0], num_steps=1, pose_mode="robust", resolution=resolution,
        interpolation=interpolation,
    )
    depth, conf = raw.depth[0, ..., 0].numpy(), raw.depth_conf[0].numpy()
    for i, (view, t) in enumerate(zip(recon.views, batch.transforms, strict=True)):
        if resolution == "original":
            d, valid = t.resample_to_original(depth[i], mode=interpolation)
            c, _ = t.resample_to_original(conf[i], mode="bilinear")
        else:
            d, c = t.crop_from_network(depth[i]), t.crop_from_network(conf[i])
            valid = np.ones(d.shape, bool)
        assert view.depth.tobytes() == d.tobytes() and view.confidence.tobytes() == c.tobytes()
        np.testing.assert_array_equal(view.valid, valid)
        points = unproject(d, view.intrinsics, view.extrinsics_c2w)
        points[~valid] = 0.0
        # One float32 unprojection against another, batched differently: a few float32
        # roundings of |t| + depth * |direction|.
        scale = np.abs(view.extrinsics_c2w[:3, 3]).max() + np.abs(points).max()
        np.testing.assert_allclose(view.world_points, points, rtol=0,
                                   atol=8 * np.finfo(np.float32).eps * scale)
        assert view.world_points.dtype == np.float32 and view.world_points.flags.c_contiguous
    first, last = recon.views[0], recon.views[2]
    for name in ("depth", "confidence", "valid", "world_points"):
        assert not np.shares_memory(getattr(first, name), getattr(last, name))
