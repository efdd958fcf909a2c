"""Time pose fitting plus depth unprojection: our two modes, and upstream's code side by side.

    python benchmarks/bench_pose_fitting.py [--upstream /tmp/dvlt_upstream/src]
                                            [--reference ../shared/reference]
                                            [--threads 1,2] [--repeats 25]

``--upstream`` points at a local export of upstream's ``src`` folder (never committed), e.g.
``git -C <mirror> archive HEAD src | tar -x -C /tmp/dvlt_upstream``. Only its
``dvlt.common.rays`` and ``dvlt.common.geometry`` modules are imported; the latter imports
``open3d`` at module level without using it for unprojection, so an empty placeholder module
stands in for it when open3d is not installed.

Inputs: with ``--reference``, the stored rays and depth of the golden model cases
(``case_released_public.npz``, ``case_small_public.npz``: uniform weights, what the evaluation
fits) and the rays and confidences of the synthetic pose-fitting goldens
(``rays_to_pose_golden.npz``, confidence-weighted); always, synthetic rays of random pinhole
cameras (noise and 5 % outlier pixels) at growing sizes. Each input is timed with the
implementations interleaved, for each thread count. Cells are ``median (min) [first]`` in ms:
median and minimum of the timed runs, and the first call on that input (before any warm-up;
the first input's first call also pays the process's one-time initialisation). The speed-ups
are ratios of medians measured in the same run.

``--reference`` also prints the accuracy of both modes on the golden synthetic cases
(``rays_to_pose_golden.npz``) against their ground-truth cameras.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dvlt_core.geometry import (
    PIXEL_CENTRE_OFFSET,
    UPSTREAM_PIXEL_OFFSET,
    compute_world_rays,
    quaternion_to_rotation,
    rays_to_pose,
    unproject_depth,
)

PATCH_SIZE = 14
SYNTHETIC_CONFIGS = [(2, 126, 168), (8, 126, 168), (2, 252, 336), (2, 518, 686)]
Inputs = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]  # rays, weights, depth


def make_inputs(frames: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(1, S, H, W, 6) noisy rays with outliers, (1, S, H, W) depth."""
    rng = np.random.RandomState(seed)
    quat = np.concatenate([rng.normal(0, 0.15, (frames, 3)), np.ones((frames, 1))], axis=1)
    c2w = np.tile(np.eye(4, dtype=np.float32), (1, frames, 1, 1))
    c2w[0, :, :3, :3] = quaternion_to_rotation(quat.astype(np.float32))
    c2w[0, :, :3, 3] = rng.normal(0, 0.3, (frames, 3))
    focal = rng.uniform(0.7, 1.2, (frames, 1)) * width
    intr = np.zeros((1, frames, 3, 3), dtype=np.float32)
    intr[0, :, 0, 0], intr[0, :, 1, 1] = focal[:, 0], focal[:, 0] * rng.uniform(0.95, 1.05, frames)
    intr[0, :, 0, 2], intr[0, :, 1, 2], intr[0, :, 2, 2] = width / 2, height / 2, 1
    rays = compute_world_rays(torch.from_numpy(c2w), torch.from_numpy(intr), height, width)
    rays = rays + 0.005 * torch.from_numpy(rng.normal(size=rays.shape).astype(np.float32))
    outliers = torch.from_numpy(rng.uniform(size=rays.shape[:-1]) < 0.05)
    rays[outliers] = torch.from_numpy(rng.normal(0, 3, (int(outliers.sum()), 6)).astype(np.float32))
    depth = torch.from_numpy(rng.uniform(0.5, 5.0, rays.shape[:-1]).astype(np.float32))
    return rays, depth


def reference_inputs(reference: Path) -> dict[str, Inputs]:
    """The golden model cases' stored rays and depth, and the synthetic goldens' rays."""
    inputs: dict[str, Inputs] = {}
    for name in ("released", "small"):
        case = np.load(reference / f"case_{name}_public.npz")
        depth = torch.from_numpy(case["raw_depth"][..., 0])
        inputs[f"model case {name}"] = (torch.from_numpy(case["raw_rays"]), None, depth)
    golden = np.load(reference / "rays_to_pose_golden.npz")
    rng = np.random.RandomState(0)
    for case in json.loads(str(golden["cases"])):
        rays = torch.from_numpy(golden[f"{case}__rays"])
        depth = torch.from_numpy(rng.uniform(0.5, 5.0, rays.shape[:4]).astype(np.float32))
        inputs[f"golden {case[:2]}"] = (rays, torch.from_numpy(golden[f"{case}__conf"]), depth)
    return inputs


def ours(mode: str) -> Callable[..., torch.Tensor]:
    offset = UPSTREAM_PIXEL_OFFSET if mode == "upstream" else PIXEL_CENTRE_OFFSET

    def run(rays: torch.Tensor, weights: torch.Tensor | None, depth: torch.Tensor) -> torch.Tensor:
        fit = rays_to_pose(rays, weights, mode, patch_size=PATCH_SIZE)
        return unproject_depth(depth, fit.intrinsics, fit.extrinsics_c2w, pixel_offset=offset)

    return run


def load_upstream(src: Path) -> Callable[..., torch.Tensor]:
    """Upstream's postprocessing (rays_to_pose + depth_to_world_coords_points) from ``src``."""
    if not (src / "dvlt" / "common" / "rays.py").is_file():
        raise SystemExit(f"--upstream {src}: expected <src>/dvlt/common/rays.py (upstream's src)")
    if "open3d" not in sys.modules and importlib.util.find_spec("open3d") is None:
        sys.modules["open3d"] = types.ModuleType("open3d")  # imported but unused, see docstring
    sys.path.insert(0, str(src))
    from dvlt.common.geometry import depth_to_world_coords_points
    from dvlt.common.rays import rays_to_pose as upstream_rays_to_pose

    def run(rays: torch.Tensor, weights: torch.Tensor | None, depth: torch.Tensor) -> torch.Tensor:
        height, width = rays.shape[2:4]
        weights = torch.ones(rays.shape[:4]) if weights is None else weights
        c2w, intr = upstream_rays_to_pose(rays, weights, height, width, PATCH_SIZE)
        return depth_to_world_coords_points(depth, c2w, intr)[0]

    return run


def time_once(fn: Callable[..., object], inputs: Inputs) -> float:
    """Milliseconds of one ``fn(*inputs)`` call."""
    start = time.perf_counter()
    fn(*inputs)
    return (time.perf_counter() - start) * 1e3


def accuracy_table(reference: Path) -> None:
    """Rotation (deg, per frame) and principal-point (px, worst frame) errors on the goldens."""
    data = np.load(reference / "rays_to_pose_golden.npz")
    print(
        "| case | rot. error upstream (deg) | rot. error robust (deg) | pp error upstream (px) "
        "| pp error robust (px) |"
    )
    print("|---|---|---|---|---|")
    for case in json.loads(str(data["cases"])):
        gt_c2w, gt_k = data[f"{case}__gt_c2w"][0], data[f"{case}__gt_K"][0]
        rot_err, pp_err = {}, {}
        for mode in ("upstream", "robust"):
            fit = rays_to_pose(
                torch.from_numpy(data[f"{case}__rays"]),
                torch.from_numpy(data[f"{case}__conf"]),
                mode,
                patch_size=int(data[f"{case}__patch_size"]),
            )
            # θ = 2·asin(‖R − R_gt‖_F / √8): no float32 floor near 0 unlike arccos of the trace.
            diff = fit.extrinsics_c2w[0, :, :3, :3].double().numpy() - gt_c2w[:, :3, :3]
            chord = np.clip(np.linalg.norm(diff, axis=(-2, -1)) / np.sqrt(8), 0, 1)
            rot_err[mode] = " / ".join(f"{e:.3f}" for e in np.degrees(2 * np.arcsin(chord)))
            pp = fit.intrinsics[0, :, :2, 2].numpy() - gt_k[:, :2, 2]
            pp_err[mode] = f"{np.linalg.norm(pp, axis=-1).max():.2f}"
        print(
            f"| {case} | {rot_err['upstream']} | {rot_err['robust']} | {pp_err['upstream']} "
            f"| {pp_err['robust']} |"
        )


def timing_table(
    impls: dict[str, Callable[..., object]], inputs: dict[str, Inputs], repeats: int
) -> None:
    """One row per input: ``median (min) [first]`` per implementation and the speed-ups."""
    header = ["input", "S x H x W", *impls]
    if "upstream" in impls:
        header += [f"x vs upstream ({name[5:]})" for name in impls if name != "upstream"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, args in inputs.items():
        first = {name: time_once(fn, args) for name, fn in impls.items()}
        for _ in range(2):  # warm-up beyond the first call
            for fn in impls.values():
                fn(*args)
        times: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(repeats):
            for name, fn in impls.items():
                times[name].append(time_once(fn, args))
        med = {name: statistics.median(t) for name, t in times.items()}
        cells = (f"{med[n]:.2f} ({min(times[n]):.2f}) [{first[n]:.1f}]" for n in impls)
        frames, height, width = args[0].shape[1:4]
        row = [label, f"{frames} x {height} x {width}", *cells]
        if "upstream" in impls:
            row += [f"{med['upstream'] / med[n]:.1f}" for n in impls if n != "upstream"]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", type=Path, help="upstream src folder to compare against")
    parser.add_argument("--repeats", type=int, default=25, help="timed runs per implementation")
    parser.add_argument(
        "--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)"
    )
    parser.add_argument("--reference", type=Path, help="folder with the golden npz files")
    args = parser.parse_args()
    if args.reference:
        accuracy_table(args.reference)
        print()

    impls = {"ours upstream": ours("upstream"), "ours robust": ours("robust")}
    if args.upstream:
        impls = {"upstream": load_upstream(args.upstream), **impls}
    inputs = reference_inputs(args.reference) if args.reference else {}
    for frames, height, width in SYNTHETIC_CONFIGS:
        rays, depth = make_inputs(frames, height, width)
        inputs[f"synthetic {frames}x{height}x{width}"] = (rays, None, depth)
    for threads in (int(n) for n in args.threads.split(",")):
        torch.set_num_threads(threads)
        print(
            f"torch {torch.__version__}, {threads} thread(s); pose fit + unprojection, "
            f"median (min) [first call] of {args.repeats} runs in ms"
        )
        with torch.no_grad():
            timing_table(impls, inputs, args.repeats)
        print()


if __name__ == "__main__":
    main()
