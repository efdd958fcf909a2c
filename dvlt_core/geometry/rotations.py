"""Rotation fitting in numpy float64, batched: Wahba/Kabsch, chordal means, angles.

Every function takes arrays with any leading batch dimensions. Rotations are proper
(det +1): the SVD projection flips the axis of the smallest singular value when the best
orthogonal matrix would be a reflection.
"""

from __future__ import annotations

import numpy as np


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations closest in Frobenius norm to ``matrix`` (the SO(3) projection).

    A zero or non-finite matrix gives the identity.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    ok = np.isfinite(matrix).all((-2, -1)) & (np.abs(matrix).sum((-2, -1)) > 0)
    safe = np.where(ok[..., None, None], matrix, np.eye(3))
    u, _, vt = np.linalg.svd(safe)
    fix = np.ones(safe.shape[:-1])
    fix[..., 2] = np.sign(np.linalg.det(u @ vt))
    fix[..., 2][fix[..., 2] == 0] = 1.0
    return (u * fix[..., None, :]) @ vt


def wahba_rotation(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """The rotation ``R`` minimising ``Σ w·‖dst − R·src‖²`` (Wahba's problem, Kabsch's SVD).

    Args:
        src: (..., N, 3) vectors (e.g. camera-frame unit bearings).
        dst: (..., N, 3) vectors (e.g. world-frame unit directions).
        weights: (..., N) non-negative weights, None for uniform.

    Returns:
        (..., 3, 3). Two non-parallel vectors determine the rotation; fewer leave it
        ambiguous (the SVD then returns one of the solutions).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if weights is not None:
        dst = dst * np.asarray(weights, dtype=np.float64)[..., None]
    return nearest_rotation(dst.swapaxes(-1, -2) @ src)


def chordal_mean(rotations: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted chordal L2 mean of (..., N, 3, 3) rotations: the SO(3) projection of
    ``Σ w·R``."""
    rotations = np.asarray(rotations, dtype=np.float64)
    if weights is None:
        return nearest_rotation(rotations.sum(-3))
    w = np.asarray(weights, dtype=np.float64)[..., None, None]
    return nearest_rotation((w * rotations).sum(-3))


def rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in radians between rotations (..., 3, 3): ``2·asin(‖a − b‖_F / √8)``, accurate
    for small angles (the arccos of the trace loses half the digits near 0)."""
    chord = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=(-2, -1)) / np.sqrt(8.0)
    return 2.0 * np.arcsin(np.clip(chord, 0.0, 1.0))


def rotation_from_vector(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle vectors (radians) → (..., 3, 3) rotations (Rodrigues)."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec, axis=-1)[..., None, None]
    axis = rotvec / np.maximum(angle[..., 0], 1e-300)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    cross = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*x.shape, 3, 3)
    eye = np.broadcast_to(np.eye(3), cross.shape)
    return eye + np.sin(angle) * cross + (1.0 - np.cos(angle)) * (cross @ cross)
