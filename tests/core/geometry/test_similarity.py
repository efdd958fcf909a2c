"""Sim(3): one class for numpy (world placement) and torch (evaluation protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.geometry import Sim3, quaternion_to_rotation


def _random_sim3(seed: int) -> Sim3:
    rng = np.random.default_rng(seed)
    return Sim3(quaternion_to_rotation(rng.normal(size=4)), rng.normal(size=3),
                float(rng.uniform(0.2, 5.0)))


def test_points_poses_matrix_and_inverse_agree():
    sim = _random_sim3(0)
    rng = np.random.default_rng(1)
    points = rng.normal(size=(5, 7, 3))
    moved = sim.apply_points(points)
    np.testing.assert_allclose(moved, sim.scale * points @ sim.rotation.T + sim.translation,
                               atol=1e-12)
    homogeneous = np.concatenate([points, np.ones((5, 7, 1))], axis=-1) @ sim.matrix().T
    np.testing.assert_allclose(homogeneous[..., :3], moved, atol=1e-12)
    np.testing.assert_allclose(sim.inverse().apply_points(moved), points, atol=1e-12)
    c2w = np.eye(4)
    c2w[:3, :3] = quaternion_to_rotation(rng.normal(size=4))
    c2w[:3, 3] = rng.normal(size=3)
    pose = sim.apply_c2w(c2w)
    np.testing.assert_allclose(pose[:3, :3], sim.rotation @ c2w[:3, :3], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], sim.apply_points(c2w[:3, 3]), atol=1e-12)
    np.testing.assert_allclose(sim.apply_c2w(c2w[:3]), pose[:3])  # 3x4 keeps its shape
    np.testing.assert_allclose(Sim3.from_rigid(pose, 2.0).matrix()[:3, :3], 2 * pose[:3, :3])


def test_torch_fields_compute_in_torch_like_numpy():
    sim = _random_sim3(2)
    as_torch = Sim3(torch.from_numpy(sim.rotation), torch.from_numpy(sim.translation),
                    torch.tensor(sim.scale, dtype=torch.float64))
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, 3] = np.random.default_rng(3).normal(size=(3, 3))
    got = as_torch.apply_c2w(torch.from_numpy(poses))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), sim.apply_c2w(poses), atol=1e-12)
    np.testing.assert_allclose(as_torch.matrix_3x4.numpy(), sim.matrix_3x4)


@pytest.mark.parametrize("shape", [(3,), (11, 3), (5, 7, 3), (0, 3)])
@pytest.mark.parametrize(("points_dtype", "rotation_dtype", "scale", "out_dtype"), [
    (np.float64, np.float64, 1.7, np.float64),
    (np.float32, np.float64, 1.7, np.float64),  # float32 clouds are placed in float64
    (np.float32, np.float32, 1.7, np.float32),
    (np.float32, np.float32, np.float64(1.7), np.float64),
])
def test_numpy_points_follow_the_homogeneous_definition(shape, points_dtype, rotation_dtype,
                                                        scale, out_dtype):
    base = _random_sim3(4)
    sim = Sim3(base.rotation.astype(rotation_dtype), base.translation, scale)
    points = np.random.default_rng(5).normal(0, 10, shape).astype(points_dtype)
    moved = sim.apply_points(points)
    assert moved.shape == shape and moved.dtype == out_dtype
    # The definition R (c p) + t on homogeneous points, in float64.
    homogeneous = np.concatenate([scale * points.astype(np.float64), np.ones((*shape[:-1], 1))],
                                 axis=-1)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = sim.rotation, sim.translation
    expected = (homogeneous @ matrix.T)[..., :3]
    # A few roundings in the output type of |c R| |p| + |t|.
    magnitude = scale * np.abs(points).max(initial=0) * 3 + np.abs(sim.translation).max()
    np.testing.assert_allclose(moved, expected, rtol=0,
                               atol=8 * np.finfo(out_dtype).eps * magnitude)
