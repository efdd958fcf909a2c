"""Parity with the upstream golden cases (deterministic weights, fp32, README tolerances)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights
from dvlt_core.tools.parity import TOLERANCES, compare, format_table, main, run_case

CASES = ("case_small_public", "case_released_public")
EXPECTED = {
    "t_pairs",
    "tokens_embed",
    "tokens_after_step1",
    "camera_head_input_tokens",
    "gates_frame_attn_first_call",
    "gates_frame_attn_last_call",
    "gates_global_attn_first_call",
    "gates_global_attn_last_call",
    "raw_rays",
    "raw_depth",
    "raw_depth_conf",
    "raw_pose_enc",
    "raw_world_points",
}


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_golden_case(reference_dir, case):
    checks, notes = run_case(reference_dir / f"{case}.npz", with_post=False)
    assert {c.name for c in checks} == EXPECTED
    assert all(c.passed for c in checks), format_table(checks)
    assert any("sha256" in n and "matches" in n for n in notes)


@pytest.fixture(scope="module")
def released(reference_dir):
    case = dict(np.load(reference_dir / "case_released_public.npz"))
    model = DVLTModel(**json.loads(str(case["config_json"]))).eval()
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return model, case


def _close(name, ours, ref):
    check = compare(name, ours.detach().numpy(), ref)
    assert check.passed, format_table([check])


def test_stages_reproduce_golden_intermediates(released):
    model, case = released
    images = torch.from_numpy(case["images"])
    H, W = images.shape[-2:]
    K = int(case["K"])
    pairs = model.inference_t_pairs(K)
    np.testing.assert_array_equal(pairs.numpy(), case["t_pairs"])
    with torch.inference_mode():
        tokens = model.encode(images)
        _close("tokens_embed", tokens.flatten(0, 1), case["tokens_embed"])
        tokens = model.step(tokens, pairs[0, 0], pairs[0, 1], 0, image_hw=(H, W))
        _close("tokens_after_step1", tokens.flatten(0, 1), case["tokens_after_step1"])
        for t_now, t_next in pairs[1:]:
            tokens = model.step(tokens, t_now, t_next, 0, image_hw=(H, W))
        out = model.decode(tokens, (H, W))
    for key in ("rays", "depth", "depth_conf", "pose_enc", "world_points"):
        _close(f"raw_{key}", out[key], case[f"raw_{key}"])
    assert out["world_points_conf"] is out["depth_conf"]


def test_stage_composition_equals_forward(released):
    model, case = released
    images = torch.from_numpy(case["images"])
    H, W = images.shape[-2:]
    with torch.inference_mode():
        full = model(images, num_steps=3)
        tokens = model.encode(images)
        plan = model.inference_plan(3)
        for (t_now, t_next), block in zip(plan.t_pairs, plan.block_indices, strict=True):
            tokens = model.step(tokens, t_now, t_next, block, image_hw=(H, W))
        staged = model.decode(tokens, (H, W))
    assert full.keys() == staged.keys()
    for key in full:
        torch.testing.assert_close(staged[key], full[key], rtol=0, atol=0)


def test_wrong_k_is_caught_by_the_goldens(released):
    """K=11 instead of 12 must fail the rays tolerance (README sensitivity table)."""
    model, case = released
    with torch.inference_mode():
        rays = model(torch.from_numpy(case["images"]), num_steps=11)["rays"]
    assert not compare("raw_rays", rays.numpy(), case["raw_rays"]).passed


def test_parity_cli_exit_codes(reference_dir, tmp_path, capsys):
    assert main([str(reference_dir / "case_small_public.npz"), "--no-post"]) == 0
    assert "13/13 passed" in capsys.readouterr().out
    case = dict(np.load(reference_dir / "case_small_public.npz"))
    case["raw_rays"] = case["raw_rays"] + 1e-3
    broken = tmp_path / "broken.npz"
    np.savez(broken, **case)
    assert main([str(broken), "--no-post"]) == 1
    out = capsys.readouterr().out
    assert "raw_rays" in out and "FAIL" in out
    assert main([str(tmp_path / "missing.npz")]) == 2


@pytest.mark.parametrize(
    ("name", "ill_frames"), [("case_small_public", 0), ("case_released_public", 1)]
)
def test_parity_cli_with_post_checks(reference_dir, capsys, name, ill_frames):
    """Every array passes, the pose fit included. The released case's frame 1 is a
    near-degenerate homography fit (upstream itself lands 1.45 away on this CPU): it is
    reported as ill-conditioned and checked on what its rays determine."""
    assert main([str(reference_dir / f"{name}.npz")]) == 0
    out = capsys.readouterr().out
    assert ("post_extrinsics_c2w[ill]" in out) == bool(ill_frames)
    if ill_frames:
        assert f"{ill_frames} ill-conditioned frame(s)" in out


def test_tolerances_follow_the_reference_readme():
    assert TOLERANCES["tokens_embed"] == (1e-5, 1e-5)
    assert TOLERANCES["raw_rays"] == TOLERANCES["raw_pose_enc"] == (5e-5, 1e-4)
    assert TOLERANCES["raw_depth_conf"] == (1e-4, 1e-4)
