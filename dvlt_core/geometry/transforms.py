"""Rigid transforms, quaternions and the 9-channel pose encoding.

Every function accepts either a ``torch.Tensor`` or a ``numpy.ndarray`` and returns the same
kind it was given. Conventions: OpenCV camera axes (x right, y down, z forward), 4x4 (or 3x4)
``[R | t]`` matrices, quaternions scalar-last ``(qx, qy, qz, qw)`` with ``qw >= 0``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _accepts_numpy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a torch implementation on numpy inputs too, returning numpy if the first arg was."""

    @functools.wraps(fn)
    def wrapper(first, *args, **kwargs):
        if not isinstance(first, np.ndarray):
            return fn(first, *args, **kwargs)
        args = tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args)
        out = fn(torch.from_numpy(first), *args, **kwargs)
        return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()

    return wrapper


@_accepts_numpy
def to_homogeneous(pose: Tensor) -> Tensor:
    """(..., 3, 4) ``[R | t]`` → (..., 4, 4) with a ``[0, 0, 0, 1]`` last row (4x4 unchanged)."""
    if pose.shape[-2:] == (4, 4):
        return pose
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"expected a (..., 3, 4) or (..., 4, 4) pose, got {tuple(pose.shape)}")
    bottom = torch.zeros((*pose.shape[:-2], 1, 4), dtype=pose.dtype, device=pose.device)
    bottom[..., 0, 3] = 1
    return torch.cat([pose, bottom], dim=-2)


@_accepts_numpy
def invert_pose(pose: Tensor) -> Tensor:
    """Invert rigid transforms: camera-to-world ↔ world-to-camera. Keeps (3,4) or (4,4) shape."""
    if pose.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"expected a (..., 3, 4) or (..., 4, 4) pose, got {tuple(pose.shape)}")
    rot_t = pose[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ pose[..., :3, 3:4])
    inverse = torch.cat([rot_t, trans], dim=-1)
    return to_homogeneous(inverse) if pose.shape[-2] == 4 else inverse


@_accepts_numpy
def rotation_to_quaternion(rotation: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices → (..., 4) unit quaternions ``(qx, qy, qz, qw)``, ``qw >= 0``.

    Uses the largest of the four ``4·q_i²`` diagonal combinations as the pivot, so it is
    accurate for every rotation angle.
    """
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) rotations, got {tuple(rotation.shape)}")
    m = rotation.unbind(-1)
    m00, m10, m20 = m[0].unbind(-1)
    m01, m11, m21 = m[1].unbind(-1)
    m02, m12, m22 = m[2].unbind(-1)
    # 4·q_i² for i = w, x, y, z.
    four_sq = torch.stack(
        [
            1 + m00 + m11 + m22,
            1 + m00 - m11 - m22,
            1 - m00 + m11 - m22,
            1 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    # Row i is 4·q_i·(qw, qx, qy, qz).
    scaled = torch.stack(
        [
            torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )
    pivot = four_sq.argmax(dim=-1, keepdim=True)
    row = torch.take_along_dim(scaled, pivot[..., None], dim=-2).squeeze(-2)
    q_wxyz = row / (2 * torch.take_along_dim(four_sq, pivot, dim=-1).clamp_min(1e-12).sqrt())
    q_xyzw = torch.cat([q_wxyz[..., 1:], q_wxyz[..., :1]], dim=-1)
    return torch.where(q_xyzw[..., 3:4] < 0, -q_xyzw, q_xyzw)


@_accepts_numpy
def quaternion_to_rotation(quaternion: Tensor) -> Tensor:
    """(..., 4) scalar-last quaternions (normalised here) → (..., 3, 3) rotation matrices."""
    if quaternion.shape[-1] != 4:
        raise ValueError(f"expected (..., 4) quaternions, got {tuple(quaternion.shape)}")
    q = quaternion / torch.linalg.vector_norm(quaternion, dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


@_accepts_numpy
def pose_encoding_from_cameras(
    extrinsics_c2w: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]
) -> Tensor:
    """Pack cameras into the camera head's layout ``[t(3), q_xyzw(4), fov_h, fov_w]``.

    ``t`` and ``q`` describe the camera-to-world transform; ``fov_h = 2·atan((H/2)/fy)`` and
    ``fov_w = 2·atan((W/2)/fx)`` (the principal point is not encoded).

    Args:
        extrinsics_c2w: (..., 3|4, 4) camera-to-world.
        intrinsics: (..., 3, 3) pinhole intrinsics in pixels.
        image_hw: (H, W) of the image the intrinsics refer to.

    Returns:
        (..., 9) float32 encoding.
    """
    height, width = image_hw
    quat = rotation_to_quaternion(extrinsics_c2w[..., :3, :3])
    fov_h = 2 * torch.atan((height / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[..., 0, 0])
    return torch.cat(
        [extrinsics_c2w[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1
    ).float()


@_accepts_numpy
def cameras_from_pose_encoding(
    pose_encoding: Tensor, image_hw: tuple[int, int], fov_eps: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pose_encoding_from_cameras` with a centred principal point.

    The quaternion is normalised and the fields of view are clamped to
    ``[fov_eps, π − fov_eps]``, so raw camera-head outputs can be decoded.

    Returns:
        ``(extrinsics_c2w (..., 4, 4), intrinsics (..., 3, 3))``.
    """
    if pose_encoding.shape[-1] != 9:
        raise ValueError(f"expected a (..., 9) pose encoding, got {tuple(pose_encoding.shape)}")
    height, width = image_hw
    rotation = quaternion_to_rotation(pose_encoding[..., 3:7])
    extrinsics = to_homogeneous(torch.cat([rotation, pose_encoding[..., :3, None]], dim=-1))
    fov = pose_encoding[..., 7:9].clamp(fov_eps, torch.pi - fov_eps)
    fy = (height / 2) / torch.tan(fov[..., 0] / 2)
    fx = (width / 2) / torch.tan(fov[..., 1] / 2)
    intrinsics = torch.zeros((*pose_encoding.shape[:-1], 3, 3), dtype=pose_encoding.dtype)
    intrinsics = intrinsics.to(pose_encoding.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1
    return extrinsics, intrinsics


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (scalar last), on the shorter arc:
    ``fraction`` 0 gives ``q0``, 1 gives ``q1`` (or ``-q1``)."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp avoids dividing by sin(θ) ≈ 0
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - fraction) * theta) * q0 + np.sin(fraction * theta) * q1) / np.sin(theta)
