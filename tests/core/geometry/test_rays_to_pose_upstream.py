"""Upstream mode of rays_to_pose and the unprojection against the upstream goldens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvlt_core.geometry import RobustOptions, rays_to_pose, unproject_depth
from dvlt_core.geometry.ransac import num_candidates, upstream_candidates, upstream_sample_table

GOLDEN_CASES = [
    "r1_centered_noisy",
    "r2_centered_conf_weighted",
    "r3_offcenter_pp_clean",
    "r4_larger_centered",
    "r5_centered_clean",
]


@pytest.fixture(scope="module")
def golden(reference_dir):
    data = np.load(reference_dir / "rays_to_pose_golden.npz")
    assert json.loads(str(data["cases"])) == GOLDEN_CASES
    return data


@pytest.fixture(scope="module")
def model_cases(reference_dir):
    return {
        name: np.load(reference_dir / f"case_{name}_public.npz") for name in ("small", "released")
    }


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_cameras_match_upstream(golden, case):
    fit = rays_to_pose(
        torch.from_numpy(golden[f"{case}__rays"]),
        torch.from_numpy(golden[f"{case}__conf"]),
        mode="upstream",
        patch_size=int(golden[f"{case}__patch_size"]),
    )
    np.testing.assert_allclose(
        fit.extrinsics_c2w.numpy(), golden[f"{case}__out_extrinsics_c2w"], rtol=0, atol=1e-4
    )
    np.testing.assert_allclose(
        fit.intrinsics.numpy(), golden[f"{case}__out_intrinsics"], rtol=0, atol=1e-2
    )
    assert fit.valid.all()


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_candidates_and_sample_table(golden, case):
    rays_patch = golden[f"{case}__dbg_rays_patch"]
    conf_patch = golden[f"{case}__dbg_conf_patch"]
    n_sample = int(golden[f"{case}__dbg_n_sample"])
    assert conf_patch.dtype == np.float32
    assert num_candidates(conf_patch.shape[1]) == n_sample
    dirs = rays_patch[..., :3] / np.linalg.norm(rays_patch[..., :3], axis=-1, keepdims=True)
    candidates = upstream_candidates(dirs, conf_patch)
    np.testing.assert_array_equal(candidates, golden[f"{case}__dbg_candidate_idx"])
    table = upstream_sample_table(n_sample)
    np.testing.assert_array_equal(table, golden[f"{case}__dbg_sample_table"])


def test_model_case_small_post_cameras(model_cases):
    case = model_cases["small"]
    fit = rays_to_pose(torch.from_numpy(case["raw_rays"]), mode="upstream")
    np.testing.assert_allclose(
        fit.extrinsics_c2w.numpy(), case["post_extrinsics_c2w"], rtol=0, atol=1e-4
    )
    np.testing.assert_allclose(fit.intrinsics.numpy(), case["post_intrinsics"], rtol=0, atol=1e-2)
    np.testing.assert_array_equal(upstream_sample_table(32), case["ransac_sample_table"])


def test_model_case_released_post_cameras(model_cases):
    """Strict check, except for one quantity that no implementation can reproduce.

    Frame 1's final refit has 5 inliers, 4 of them collinear: the first column of the
    homography is zero to 1e-7, so its determinant (whose sign fixes the sign of the whole
    homography) and the rotation about the optical axis are decided by float32 rounding.
    Upstream's own code run on this CPU differs from the stored rotation by 1.45. For that
    frame R is only checked to be orthonormal with an optical axis that matches up to sign;
    the translation and the intrinsics are well determined and checked strictly.
    """
    case = model_cases["released"]
    fit = rays_to_pose(torch.from_numpy(case["raw_rays"]), mode="upstream")
    ext, ref_ext = fit.extrinsics_c2w.numpy()[0], case["post_extrinsics_c2w"][0]
    np.testing.assert_allclose(ext[0], ref_ext[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ext[1][:, 3], ref_ext[1][:, 3], rtol=0, atol=1e-4)
    axis, ref_axis = ext[1][:3, 2], ref_ext[1][:3, 2]
    np.testing.assert_allclose(axis * np.sign(axis @ ref_axis), ref_axis, rtol=0, atol=1e-4)
    rot = ext[1][:3, :3].astype(np.float64)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-5)
    assert abs(np.linalg.det(rot)) == pytest.approx(1.0, abs=1e-5)  # det sign is rounding too
    np.testing.assert_allclose(fit.intrinsics.numpy(), case["post_intrinsics"], rtol=0, atol=1e-2)
    assert fit.num_inliers.tolist()[0][1] == 5


@pytest.mark.parametrize("name", ["small", "released"])
def test_unprojection_recomputes_post_world_points(model_cases, name):
    case = model_cases[name]
    points = unproject_depth(
        torch.from_numpy(case["raw_depth"][..., 0]),
        torch.from_numpy(case["post_intrinsics"]),
        torch.from_numpy(case["post_extrinsics_c2w"]),
        pixel_offset=0.0,
    )
    np.testing.assert_allclose(points.numpy(), case["post_world_points"], rtol=0, atol=1e-5)


def test_end_to_end_golden_postprocessing(reference_dir):
    """The evaluation golden's cameras and points (3 frames, 56x84, a 4x6 patch grid)."""
    data = np.load(reference_dir / "metrics_golden.npz")
    fit = rays_to_pose(torch.from_numpy(data["e2e__raw_rays"]), mode="upstream")
    np.testing.assert_allclose(
        fit.extrinsics_c2w.numpy()[0, :, :3], data["e2e__pred_extrinsics_c2w_3x4"], atol=1e-4
    )
    np.testing.assert_allclose(fit.intrinsics.numpy()[0], data["e2e__pred_intrinsics"], atol=1e-2)
    points = unproject_depth(
        torch.from_numpy(data["e2e__raw_depth"][..., 0]), fit.intrinsics, fit.extrinsics_c2w
    )
    np.testing.assert_allclose(points.numpy(), data["e2e__pred_world_points"], atol=1e-4)


def test_upstream_mode_handles_non_finite_rays(golden):
    rays = torch.from_numpy(golden["r5_centered_clean__rays"]).clone()
    rays[0, 0, :20] = torch.nan
    rays[0, 1] = torch.inf
    fit = rays_to_pose(rays, mode="upstream")
    assert fit.extrinsics_c2w.isfinite().all() and fit.intrinsics.isfinite().all()
    assert fit.valid.tolist() == [[True, False]]
    ref = rays_to_pose(torch.from_numpy(golden["r5_centered_clean__rays"]), mode="upstream")
    np.testing.assert_allclose(fit.extrinsics_c2w[0, 0], ref.extrinsics_c2w[0, 0], atol=1e-4)


def test_upstream_mode_input_errors():
    with pytest.raises(ValueError, match="at least 8 patches"):
        rays_to_pose(torch.ones(1, 1, 28, 28, 6), mode="upstream")
    with pytest.raises(ValueError, match="only apply to mode='robust'"):
        rays_to_pose(torch.ones(1, 1, 56, 56, 6), mode="upstream", options=RobustOptions())
