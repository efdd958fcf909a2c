"""Similarity transforms Sim(3): ``p ↦ c·R·p + t`` (SE(3) when ``c = 1``).

One class serves numpy (float64 world placement in the node) and torch (the evaluation
protocol, which must follow the upstream evaluator's float32 arithmetic): the fields keep the
array type they were given and every method computes with that library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Array = Any  # numpy.ndarray or torch.Tensor, the same kind for every field


def _is_torch(value: Array) -> bool:
    return isinstance(value, torch.Tensor)


def _apply_rigid(points: Array, rotation: Array, translation: Array) -> Array:
    """``R·p + t`` for torch points (..., 3), evaluated in homogeneous form like the
    upstream evaluator (so float32 results match its rounding)."""
    transform = torch.eye(4, dtype=points.dtype, device=points.device)
    transform[:3, :3] = rotation
    transform[:3, 3] = translation
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    return torch.einsum("...i,ji->...j", homogeneous, transform)[..., :3]


@dataclass(frozen=True)
class Sim3:
    """A similarity ``p ↦ R·(c·p) + t``; rotation (3, 3), translation (3,), scale 0-d."""

    rotation: Array = field(default_factory=lambda: np.eye(3))
    translation: Array = field(default_factory=lambda: np.zeros(3))
    scale: Array | float = 1.0

    @classmethod
    def from_rigid(cls, matrix: np.ndarray, scale: float = 1.0) -> Sim3:
        """``rigid ∘ (p ↦ scale·p)`` for a 4x4 (or 3x4) rigid ``matrix`` (float64 numpy)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        return cls(matrix[:3, :3].copy(), matrix[:3, 3].copy(), float(scale))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Sim3:
        """From a 4x4 ``[c·R | t]`` with ``c > 0`` (float64 numpy)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        scale = float(np.cbrt(np.linalg.det(matrix[:3, :3])))
        if not scale > 0:
            raise ValueError(f"not a similarity with positive scale (det {scale ** 3:g})")
        return cls(matrix[:3, :3] / scale, matrix[:3, 3].copy(), scale)

    def compose(self, other: Sim3) -> Sim3:
        """``self ∘ other`` (apply ``other`` first), numpy."""
        rotation = np.asarray(self.rotation) @ np.asarray(other.rotation)
        translation = self.apply_points(np.asarray(other.translation))
        return Sim3(rotation, translation, float(self.scale * other.scale))

    @property
    def matrix_3x4(self) -> Array:
        """``[R | t]``, the rigid part (the scale is kept separately, as evaluators report it)."""
        if _is_torch(self.rotation):
            return torch.cat([self.rotation, self.translation[:, None]], dim=-1)
        return np.concatenate([self.rotation, self.translation[:, None]], axis=-1)

    def matrix(self) -> np.ndarray:
        """4x4 ``[c·R | t]`` acting on homogeneous points."""
        out = np.eye(4)
        out[:3, :3] = np.asarray(self.scale * self.rotation)
        out[:3, 3] = np.asarray(self.translation)
        return out

    def apply_points(self, points: Array) -> Array:
        """Transform points of shape (..., 3).

        numpy: one matrix product ``p @ (c·R)ᵀ + t`` in the type that ``c·p`` and ``R``
        promote to (float64 for the usual float64 rotation, also for float32 points).
        """
        if _is_torch(points):
            return _apply_rigid(self.scale * points, self.rotation, self.translation)
        points = np.asarray(points)
        rotation = np.asarray(self.rotation)
        dtype = np.result_type(self.scale, points.dtype, rotation.dtype)
        linear = (self.scale * rotation).astype(dtype, copy=False)
        out = np.matmul(points, linear.T, dtype=dtype)
        out += np.asarray(self.translation, dtype=dtype)
        return out

    def apply_c2w(self, c2w: Array) -> Array:
        """Camera-to-frame poses (..., 3|4, 4) into this transform's target frame (still
        rigid): ``R_i ← R·R_i``, ``t_i ← R·(c·t_i) + t``; the shape is kept."""
        out = c2w.clone() if _is_torch(c2w) else np.array(c2w, dtype=np.float64)
        out[..., :3, :3] = self.rotation @ c2w[..., :3, :3]
        out[..., :3, 3] = self.apply_points(c2w[..., :3, 3])
        return out

    def inverse(self) -> Sim3:
        """``p ↦ (R^T·(p − t)) / c``."""
        rotation = self.rotation.T
        return Sim3(rotation, -(rotation @ self.translation) / self.scale, 1.0 / self.scale)
