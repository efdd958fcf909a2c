"""Check the model against an upstream golden case: ``python -m dvlt_core.tools.parity CASE.npz``.

Rebuilds ``DVLTModel`` from the case's ``config_json``, loads the deterministic weights of its
``weights_seed`` (verifying ``weights_sha256``), runs ``forward`` with the case's K in float32,
and compares every stored array it can produce with the tolerances of the reference README:

``tol used`` is ``max |ours - ref| / (atol + rtol·|ref|)``: the share of the tolerance spent.

* the t-grid (exact), intermediates captured with forward hooks (``tokens_embed``,
  ``tokens_after_step1``, ``camera_head_input_tokens``, first/last gates): atol = rtol = 1e-5;
* ``raw_rays``, ``raw_pose_enc``: atol 5e-5, rtol 1e-4; ``raw_depth``, ``raw_depth_conf``,
  ``raw_world_points``: atol = rtol = 1e-4;
* if :mod:`dvlt_core.geometry` provides them, the strict postprocessing checks: ``rays_to_pose``
  on the *stored* ``raw_rays`` against ``post_extrinsics_c2w`` (atol 1e-4) and
  ``post_intrinsics`` (atol 1e-2 px), and ``unproject_depth`` of the stored ``raw_depth`` with the
  stored cameras against ``post_world_points`` (atol 1e-5).

Pose fitting is a RANSAC argmax: where a frame's fit is ill-conditioned (its camera moves by
more than the tolerance when the stored rays are perturbed by 1e-6 relative, as upstream's
own code does between CPUs), the stored rotation is decided by float rounding. Such frames
are reported separately and checked on what the rays do determine: the translation, the
optical axis up to sign and an orthonormal rotation. Well-conditioned frames are checked
strictly.

Prints a table and exits with status 1 if any check fails (2 if the case cannot be run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dvlt_core.model import DVLTModel
from dvlt_core.testing.det_weights import load_deterministic_weights

INTERMEDIATE_TOL = (1e-5, 1e-5)
TOLERANCES: dict[str, tuple[float, float]] = {
    "t_pairs": (0.0, 0.0),
    "tokens_embed": INTERMEDIATE_TOL,
    "tokens_after_step1": INTERMEDIATE_TOL,
    "camera_head_input_tokens": INTERMEDIATE_TOL,
    "gates_frame_attn_first_call": INTERMEDIATE_TOL,
    "gates_frame_attn_last_call": INTERMEDIATE_TOL,
    "gates_global_attn_first_call": INTERMEDIATE_TOL,
    "gates_global_attn_last_call": INTERMEDIATE_TOL,
    "raw_rays": (5e-5, 1e-4),
    "raw_pose_enc": (5e-5, 1e-4),
    "raw_depth": (1e-4, 1e-4),
    "raw_depth_conf": (1e-4, 1e-4),
    "raw_world_points": (1e-4, 1e-4),
    "post_extrinsics_c2w": (1e-4, 0.0),
    "post_intrinsics": (1e-2, 0.0),
    "post_world_points": (1e-5, 0.0),
}
RAW_OUTPUTS = ("rays", "depth", "depth_conf", "pose_enc", "world_points")


@dataclass(frozen=True)
class Check:
    """One compared array."""

    name: str
    max_abs: float
    max_rel: float
    tol_used: float
    atol: float
    rtol: float
    passed: bool
    note: str = ""


def compare(name: str, ours: np.ndarray, ref: np.ndarray) -> Check:
    """``|ours - ref| <= atol + rtol·|ref|`` elementwise (NaN only matches NaN)."""
    atol, rtol = TOLERANCES[name]
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        if ours.ndim == ref.ndim and ours.shape[0] == 1:
            ours = np.broadcast_to(ours, ref.shape)
        else:
            return Check(
                name,
                np.inf,
                np.inf,
                np.inf,
                atol,
                rtol,
                False,
                f"shape {ours.shape} != {ref.shape}",
            )
    diff = np.abs(ours - ref)
    both_nan = np.isnan(ours) & np.isnan(ref)
    diff = np.where(both_nan, 0.0, diff)
    finite = ~np.isnan(diff)
    max_abs = float(diff.max()) if diff.size and finite.all() else (np.inf if diff.size else 0.0)
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    max_rel = float(rel.max()) if rel.size and finite.all() else (np.inf if rel.size else 0.0)
    bound = atol + rtol * np.abs(ref)
    passed = bool(finite.all() and np.all(diff <= bound))
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.where(diff == 0, 0.0, diff / bound)
    tol_used = float(used.max()) if used.size and finite.all() else (np.inf if used.size else 0.0)
    return Check(name, max_abs, max_rel, tol_used, atol, rtol, passed)


@contextlib.contextmanager
def capture_intermediates(model: DVLTModel) -> Iterator[dict[str, torch.Tensor]]:
    """Record the golden intermediates during ``model.forward`` with forward hooks."""
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def before_first_step(module, args):
        if "tokens_embed" not in seen:
            tokens = args[0]
            seen["tokens_embed"] = tokens.reshape(-1, *tokens.shape[-2:]).detach().clone()

    def after_first_step(module, args, output):
        if "tokens_after_step1" not in seen:
            seen["tokens_after_step1"] = output.reshape(-1, *output.shape[-2:]).detach().clone()

    def gate_hook(which: str):
        def hook(module, args, output):
            key = f"gates_{which}_first_call"
            if key not in seen:
                seen[key] = output.detach().clone()
            seen[f"gates_{which}_last_call"] = output.detach().clone()

        return hook

    def camera_input(module, args):
        seen["camera_head_input_tokens"] = args[0].detach().clone()

    for block in model.recurrent_blocks:
        handles.append(block.register_forward_pre_hook(before_first_step))
        handles.append(block.register_forward_hook(after_first_step))
        for which in ("frame_attn", "global_attn"):
            gates = getattr(block, which).depth_scale
            if gates is not None:
                handles.append(gates.register_forward_hook(gate_hook(which)))
    if model.camera_head is not None:
        handles.append(model.camera_head.register_forward_pre_hook(camera_input))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


PERTURBATION = 1e-6
PERTURBATION_TRIALS = 4


def ill_conditioned_frames(rays: torch.Tensor, extrinsics: np.ndarray) -> np.ndarray:
    """(B, S) bool: frames whose upstream-mode camera moves by more than the extrinsics
    tolerance when ``rays`` are perturbed by ``PERTURBATION`` relative noise."""
    from dvlt_core.geometry import rays_to_pose

    atol = TOLERANCES["post_extrinsics_c2w"][0]
    generator = torch.Generator().manual_seed(0)
    unstable = np.zeros(extrinsics.shape[:2], dtype=bool)
    for _ in range(PERTURBATION_TRIALS):
        noise = torch.randn(rays.shape, generator=generator)
        moved = rays_to_pose(rays * (1 + PERTURBATION * noise), mode="upstream").extrinsics_c2w
        unstable |= np.abs(moved.numpy() - extrinsics).max(axis=(-1, -2)) > atol
    return unstable


def _ill_conditioned_check(ours: np.ndarray, ref: np.ndarray) -> Check:
    """Translation, optical axis up to sign and orthonormality of ill-conditioned frames."""
    axis, ref_axis = ours[:, :3, 2], ref[:, :3, 2]
    signs = np.sign(np.sum(axis * ref_axis, axis=-1, keepdims=True))
    determined = np.concatenate([ours[:, :3, 3], axis * signs], axis=-1)
    check = compare(
        "post_extrinsics_c2w", determined, np.concatenate([ref[:, :3, 3], ref_axis], axis=-1)
    )
    rot = ours[:, :3, :3].astype(np.float64)
    orthonormal = np.allclose(rot @ np.swapaxes(rot, -1, -2), np.eye(3), atol=1e-5)
    return Check(
        "post_extrinsics_c2w[ill]", check.max_abs, check.max_rel, check.tol_used, check.atol,
        check.rtol, check.passed and orthonormal,
        f"{len(ours)} ill-conditioned frame(s): t, optical axis, orthonormal R",
    )


def _post_checks(case: dict[str, np.ndarray]) -> tuple[list[Check], str]:
    """Strict rays_to_pose / unprojection checks on the stored raw outputs, if available."""
    try:
        from dvlt_core.geometry import rays_to_pose, unproject_depth
    except ImportError as err:
        return [], f"post_* checks skipped: dvlt_core.geometry is not available ({err})"
    rays = torch.from_numpy(case["raw_rays"])
    fit = rays_to_pose(rays, weights=None, mode="upstream")
    ours, ref = fit.extrinsics_c2w.numpy(), case["post_extrinsics_c2w"]
    ill = ill_conditioned_frames(rays, ours)
    checks = [compare("post_extrinsics_c2w", ours[~ill], ref[~ill])]
    if ill.any():
        checks.append(_ill_conditioned_check(ours[ill], ref[ill]))
    checks.append(compare("post_intrinsics", fit.intrinsics.numpy(), case["post_intrinsics"]))
    points = unproject_depth(
        torch.from_numpy(case["raw_depth"][..., 0]),
        torch.from_numpy(case["post_intrinsics"]),
        torch.from_numpy(case["post_extrinsics_c2w"]),
    )
    checks.append(compare("post_world_points", points.numpy(), case["post_world_points"]))
    return checks, ""


def run_case(path: str | Path, *, with_post: bool = True) -> tuple[list[Check], list[str]]:
    """Run one golden case; return the checks and informational notes."""
    case = dict(np.load(path))
    config = json.loads(str(case["config_json"]))
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = DVLTModel(**config).eval()
    notes.extend(str(w.message) for w in caught)
    sha = load_deterministic_weights(
        model, int(case["weights_seed"]), expected_sha256=str(case["weights_sha256"])
    )
    notes.append(f"weights seed {int(case['weights_seed'])}: sha256 {sha} matches")
    linspace = model.config.k_sampling == "linspace"
    num_steps = int(case["K"]) if linspace else None
    checks: list[Check] = []
    if linspace and "t_pairs" in case:
        checks.append(
            compare("t_pairs", model.inference_t_pairs(num_steps).numpy(), case["t_pairs"])
        )
    images = torch.from_numpy(case["images"])
    with torch.inference_mode(), capture_intermediates(model) as seen:
        outputs = model(images, num_steps=num_steps)
    for name, value in seen.items():
        if name in case:
            checks.append(compare(name, value.numpy(), case[name]))
    for key in RAW_OUTPUTS:
        if f"raw_{key}" in case and key in outputs:
            checks.append(compare(f"raw_{key}", outputs[key].numpy(), case[f"raw_{key}"]))
    if with_post and "post_extrinsics_c2w" in case:
        post, note = _post_checks(case)
        checks.extend(post)
        if note:
            notes.append(note)
    return checks, notes


def format_table(checks: list[Check]) -> str:
    lines = [
        f"{'array':<28} {'max abs err':>11} {'max rel err':>11} {'tol used':>9} "
        f"{'atol/rtol':>13}  result"
    ]
    for c in checks:
        result = "PASS" if c.passed else "FAIL"
        note = f"  ({c.note})" if c.note else ""
        lines.append(
            f"{c.name:<28} {c.max_abs:>11.3e} {c.max_rel:>11.3e} {c.tol_used:>9.3f} "
            f"{f'{c.atol:g}/{c.rtol:g}':>13}  {result}{note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dvlt_core.tools.parity",
        description="Compare DVLTModel with an upstream golden case (deterministic weights).",
    )
    parser.add_argument("case", type=Path, help="golden case .npz (e.g. case_small_public.npz)")
    parser.add_argument("--verbose", action="store_true", help="print the config and notes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-post", action="store_true", help="skip the post_* checks")
    args = parser.parse_args(argv)
    if not args.case.is_file():
        print(f"error: {args.case} is not a file; pass a golden case .npz", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        checks, notes = run_case(args.case, with_post=not args.no_post)
    except (ValueError, KeyError) as err:
        print(f"error: cannot run {args.case}: {err}", file=sys.stderr)
        return 2
    if args.verbose:
        case = np.load(args.case)
        print(f"case: {args.case}")
        print(f"config: {case['config_json']}")
        print(f"K: {int(case['K'])}, images: {tuple(case['images'].shape)}")
    for note in notes:
        if args.verbose or "skipped" in note:
            print(f"note: {note}")
    print(format_table(checks))
    failed = [c.name for c in checks if not c.passed]
    summary = f"{len(checks) - len(failed)}/{len(checks)} passed"
    print(summary + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
