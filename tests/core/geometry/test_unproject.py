"""Depth unprojection and ground-truth ray maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.geometry import compute_world_rays, pixel_grid, unproject_depth


@pytest.fixture(scope="module")
def cameras(reference_dir):
    data = np.load(reference_dir / "metrics_golden.npz")
    return {
        "c2w": torch.from_numpy(data["loss__batch_extrinsics_c2w"]),
        "K": torch.from_numpy(data["loss__batch_intrinsics"]),
        "rays": torch.from_numpy(data["loss__batch_world_rays"]),
        "depth": torch.from_numpy(data["loss__batch_depths"]),
    }


def test_world_rays_match_upstream(cameras):
    rays = compute_world_rays(cameras["c2w"], cameras["K"], 28, 42)
    assert rays.shape == (2, 3, 28, 42, 6) and rays.dtype == torch.float32
    torch.testing.assert_close(rays, cameras["rays"], atol=1e-5, rtol=1e-5)


def test_pixel_centre_unprojection_follows_the_rays(cameras):
    rays = compute_world_rays(cameras["c2w"], cameras["K"], 28, 42)
    depth = cameras["depth"]
    points = unproject_depth(depth, cameras["K"], cameras["c2w"], pixel_offset=0.5)
    torch.testing.assert_close(
        points, rays[..., 3:] + rays[..., :3] * depth[..., None], atol=1e-5, rtol=0
    )


def test_pixel_offset_is_a_half_pixel_principal_point_shift(cameras):
    k, c2w = cameras["K"][:1, :1], cameras["c2w"][:1, :1]
    depth = torch.full((1, 1, 4, 5), 2.0)
    corner = unproject_depth(depth, k, c2w, pixel_offset=0.0)
    shifted_k = k.clone()
    shifted_k[..., :2, 2] -= 0.5  # moving the principal point by -0.5 px = sampling at u + 0.5
    centre = unproject_depth(depth, shifted_k, c2w, pixel_offset=0.0)
    torch.testing.assert_close(unproject_depth(depth, k, c2w, pixel_offset=0.5), centre)
    assert not torch.allclose(corner, centre)


def test_camera_frame_values_and_3x4_extrinsics():
    k = torch.tensor([[100.0, 0, 2.0], [0, 50.0, 1.0], [0, 0, 1]])
    c2w = torch.eye(4)[:3]
    depth = torch.arange(6.0).reshape(2, 3) + 1
    points = unproject_depth(depth, k, c2w)
    u, v = pixel_grid(2, 3, 0.0)
    expected = torch.stack([(u - 2) / 100 * depth, (v - 1) / 50 * depth, depth], dim=-1)
    torch.testing.assert_close(points, expected)


def test_shape_errors():
    with pytest.raises(ValueError, match="intrinsics"):
        unproject_depth(torch.ones(2, 4, 5), torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match="extrinsics_c2w"):
        unproject_depth(torch.ones(4, 5), torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError, match="same leading"):
        compute_world_rays(torch.eye(4)[None], torch.eye(3), 4, 5)


def test_batched_points_are_row_major_and_equal_single_views(cameras):
    # Downstream gathers (x, y, z) rows: batched maps must not come out channel-planar.
    depth = cameras["depth"].reshape(-1, 28, 42)
    k, c2w = cameras["K"].reshape(-1, 3, 3), cameras["c2w"].reshape(-1, *cameras["c2w"].shape[-2:])
    points = unproject_depth(depth, k, c2w)
    assert points.is_contiguous()
    for i in range(len(depth)):
        single = unproject_depth(depth[i], k[i], c2w[i])
        assert single.is_contiguous()
        # The same float32 sums of three products, grouped per batch or not.
        scale = float(c2w[i, :3, 3].abs().max() + single.abs().max())
        torch.testing.assert_close(points[i], single, rtol=0,
                                   atol=8 * torch.finfo(torch.float32).eps * scale)


def test_gradients_flow_through_batched_unprojection():
    depth = torch.full((2, 3, 4), 2.0, requires_grad=True)
    k = torch.tensor([[10.0, 0, 2.0], [0, 10.0, 1.5], [0, 0, 1]]).expand(2, 3, 3)
    points = unproject_depth(depth, k, torch.eye(4).expand(2, 4, 4))
    assert points.is_contiguous()
    points[..., 2].sum().backward()  # z is the depth itself
    torch.testing.assert_close(depth.grad, torch.ones_like(depth))
