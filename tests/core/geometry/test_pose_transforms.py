"""Rigid transforms, quaternions and the pose encoding, for torch and numpy inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dvlt_core.geometry import (
    cameras_from_pose_encoding,
    invert_pose,
    pose_encoding_from_cameras,
    quaternion_to_rotation,
    rotation_to_quaternion,
    to_homogeneous,
)


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    quat = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    poses = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    poses[:, :3, :3] = quaternion_to_rotation(quat)
    poses[:, :3, 3] = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return poses


def test_invert_pose_torch_and_numpy():
    poses = random_poses(16)
    inverse = invert_pose(poses)
    torch.testing.assert_close(inverse @ poses, torch.eye(4, dtype=torch.float64).expand_as(poses))
    np.testing.assert_allclose(invert_pose(poses.numpy()), inverse.numpy())
    three_by_four = invert_pose(poses[:, :3])
    assert three_by_four.shape == (16, 3, 4)
    torch.testing.assert_close(to_homogeneous(three_by_four), inverse)
    with pytest.raises(ValueError, match="pose"):
        invert_pose(torch.eye(3))


def test_quaternion_round_trip_and_sign():
    poses = random_poses(64, seed=1)
    quat = rotation_to_quaternion(poses[:, :3, :3])
    assert (quat[:, 3] >= 0).all()
    torch.testing.assert_close(quat.norm(dim=-1), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_rotation(quat), poses[:, :3, :3])


@pytest.mark.parametrize(
    ("axis", "angle", "expected"),
    [
        (2, 90.0, [0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)]),
        (0, 180.0, [1.0, 0.0, 0.0, 0.0]),
        (1, -60.0, [0.0, -0.5, 0.0, math.cos(math.pi / 6)]),
    ],
)
def test_quaternion_known_values(axis, angle, expected):
    quat = np.zeros(4)
    quat[axis], quat[3] = math.sin(math.radians(angle) / 2), math.cos(math.radians(angle) / 2)
    rotation = quaternion_to_rotation(quat)
    assert isinstance(rotation, np.ndarray)
    np.testing.assert_allclose(rotation_to_quaternion(rotation), expected, atol=1e-12)


def test_pose_encoding_round_trip():
    poses = random_poses(6, seed=2).float()
    intrinsics = torch.tensor([[120.0, 0, 84.0], [0, 110.0, 63.0], [0, 0, 1]]).repeat(6, 1, 1)
    encoding = pose_encoding_from_cameras(poses, intrinsics, (126, 168))
    assert encoding.shape == (6, 9) and encoding.dtype == torch.float32
    torch.testing.assert_close(encoding[:, 7], torch.full((6,), 2 * math.atan(63 / 110)))
    torch.testing.assert_close(encoding[:, 8], torch.full((6,), 2 * math.atan(84 / 120)))
    c2w, k = cameras_from_pose_encoding(encoding, (126, 168))
    torch.testing.assert_close(c2w, poses, atol=1e-5, rtol=0)
    torch.testing.assert_close(k, intrinsics, atol=1e-3, rtol=0)
    c2w_np, k_np = cameras_from_pose_encoding(encoding.numpy(), (126, 168))
    np.testing.assert_allclose(c2w_np, c2w.numpy())
    np.testing.assert_allclose(k_np, k.numpy())


def test_quaternions_of_many_rotations_and_half_turns():
    rng = np.random.default_rng(7)
    for quat in rng.normal(size=(200, 4)):
        rotation = quaternion_to_rotation(quat)
        q = rotation_to_quaternion(rotation)
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(quaternion_to_rotation(q), rotation, atol=1e-12)
    for half_turn in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        np.testing.assert_allclose(quaternion_to_rotation(rotation_to_quaternion(half_turn)),
                                   half_turn, atol=1e-12)
