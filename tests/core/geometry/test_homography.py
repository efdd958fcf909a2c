"""The homography solvers of the pose fit against direct dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest

from dvlt_core.geometry.homography import (
    homographies_from_moments,
    homography_from_four_points,
    homography_from_moments,
    normal_matrix,
    point_moments,
    transfer_errors,
)


def _random_homographies(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    hom = np.eye(3) + 0.3 * rng.normal(size=(*shape, 3, 3))
    return hom / hom[..., 2:3, 2:3]


def _apply(hom: np.ndarray, points: np.ndarray) -> np.ndarray:
    proj = np.concatenate([points, np.ones_like(points[..., :1])], -1) @ np.swapaxes(hom, -1, -2)
    return proj[..., :2] / proj[..., 2:]


def test_normal_matrix_is_the_weighted_design_gram():
    rng = np.random.default_rng(0)
    src, dst, w = rng.normal(size=(7, 2)), rng.normal(size=(7, 2)), rng.uniform(size=7)
    p = np.concatenate([src, np.ones((7, 1))], -1)
    rows = []
    for pi, (u, v), wi in zip(p, dst, w, strict=True):
        rows += [
            np.sqrt(wi) * np.r_[-pi, 0, 0, 0, u * pi],
            np.sqrt(wi) * np.r_[0, 0, 0, -pi, v * pi],
        ]
    design = np.array(rows)
    gram = normal_matrix(point_moments(src, dst, w).sum(0))
    np.testing.assert_allclose(gram, design.T @ design, atol=1e-12)


def test_exact_solvers_recover_the_homography():
    rng = np.random.default_rng(1)
    hom = _random_homographies(rng, (3, 5))
    src = rng.uniform(-1, 1, (3, 5, 4, 2))
    dst = _apply(hom, src)
    np.testing.assert_allclose(homography_from_four_points(src, dst), hom, atol=1e-9)
    moments = point_moments(src, dst, np.ones((3, 5, 4))).sum(-2)
    np.testing.assert_allclose(homography_from_moments(moments), hom, atol=1e-6)


def test_batched_solver_matches_the_eigendecomposition_on_noisy_samples():
    """The hypotheses' solver (block inverse + powers) against LAPACK on 8-point samples."""
    rng = np.random.default_rng(2)
    hom = _random_homographies(rng, (2, 100))
    src = rng.uniform(-1, 1, (2, 100, 8, 2))
    dst = _apply(hom, src) + rng.normal(0, 0.01, (2, 100, 8, 2))
    moments = point_moments(src, dst, rng.uniform(0.5, 1.0, (2, 100, 8))).sum(-2)
    expected = np.linalg.eigh(normal_matrix(moments))[1][..., 0].reshape(2, 100, 3, 3)
    np.testing.assert_allclose(
        homographies_from_moments(moments), expected / expected[..., 2:3, 2:3], atol=1e-7
    )


@pytest.mark.parametrize("clamp_depth", [True, False])
def test_transfer_errors(clamp_depth):
    rng = np.random.default_rng(3)
    hom = _random_homographies(rng, (2, 4))
    src, dst = rng.uniform(-1, 1, (2, 6, 2)), rng.uniform(-1, 1, (2, 6, 2))
    src_cols = np.swapaxes(np.concatenate([src, np.ones((2, 6, 1))], -1), -1, -2)
    errors = transfer_errors(hom, src_cols, np.swapaxes(dst, -1, -2), clamp_depth=clamp_depth)
    expected = np.square(_apply(hom, src[:, None]) - dst[:, None]).sum(-1)
    np.testing.assert_allclose(errors, expected, rtol=1e-12)
    behind = hom.copy()
    behind[0, 0, 2] = [0.0, 0.0, -1.0]  # every point maps behind the plane
    errors = transfer_errors(behind, src_cols, np.swapaxes(dst, -1, -2), clamp_depth=clamp_depth)
    assert np.isnan(errors[0, 0]).all() != clamp_depth
