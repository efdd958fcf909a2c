"""How much pose error a known (calibrated) K removes: rays_to_pose with and without K.

    python benchmarks/bench_known_intrinsics.py [--img-size 504] [--windows 3] [--seeds 3]

The ground-truth backend gives the exact rays of the synthetic four-camera rig
(:func:`dvlt_core.synthetic.default_rig`, 640x480, off-centre principal points) at network
resolution; noise is added to the ray directions (which have camera-frame z = 1, so the
noise is in tangent units, about radians) and, with the same σ in metres, to the origins:

* ``pixel``: independent N(0, σ) per pixel and component (averages out within a patch);
* ``patch``: N(0, σ) constant over each 14 px patch (a token-level error that does not);
* ``patch+outliers``: ``patch`` plus 20 % of the patches replaced by random directions.

Each window (two snapshots, 8 views) is fitted by the robust mode with the intrinsics
estimated and with the true ones (mapped to the network canvas). Rotation error is the angle
to the true camera-to-window rotation, translation error the distance to the true centre
(metres: the ground truth is metric), both averaged over views, windows and seeds; the focal
error is that of the estimated K (the known K has none).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.geometry import rays_to_pose
from dvlt_core.geometry.rotations import rotation_angle
from dvlt_core.io.images import preprocess
from dvlt_core.synthetic import default_rig

NOISE_LEVELS = (0.0, 0.002, 0.005, 0.01, 0.02)
MODELS = ("pixel", "patch", "patch+outliers")
PATCH = 14


def add_noise(rays: torch.Tensor, model: str, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """(1, S, H, W, 6) rays with noise on the directions and the origins."""
    noisy = rays.clone()
    _, frames, height, width, _ = rays.shape
    if model == "pixel":
        noise = torch.randn((frames, height, width, 6), generator=gen, dtype=rays.dtype)
    else:
        grid = (math.ceil(height / PATCH), math.ceil(width / PATCH))
        noise = torch.randn((frames, *grid, 6), generator=gen, dtype=rays.dtype)
        noise = noise.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)[:, :height, :width]
    noisy[0] += sigma * noise
    if model == "patch+outliers":
        grid = (math.ceil(height / PATCH), math.ceil(width / PATCH))
        garbage = torch.rand((frames, *grid), generator=gen) < 0.2
        garbage = garbage.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
        garbage = garbage[:, :height, :width]
        random_dirs = torch.randn((frames, height, width, 3), generator=gen, dtype=rays.dtype)
        noisy[0, ..., :3] = torch.where(garbage[..., None], random_dirs, noisy[0, ..., :3])
    return noisy


def errors(fit, truth: np.ndarray) -> tuple[float, float]:
    c2w = fit.extrinsics_c2w[0].double().numpy()
    rotation = np.degrees(rotation_angle(c2w[:, :3, :3], truth[:, :3, :3])).mean()
    translation = np.linalg.norm(c2w[:, :3, 3] - truth[:, :3, 3], axis=1).mean()
    return float(rotation), float(translation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=504)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    rig = default_rig(640, 480, num_cameras=4)
    times = [0.8 * i for i in range(args.windows + 1)]
    backend = GroundTruthBackend.for_rig(rig, times, img_size=args.img_size)
    windows = []
    for newest, older in zip(times[1:], times[:-1], strict=True):
        views = rig.snapshot(newest) + rig.snapshot(older)
        batch = preprocess([v.image for v in views], img_size=args.img_size)
        rays = backend.infer(batch.images).rays
        reference = np.linalg.inv(views[0].c2w)
        truth = np.stack([reference @ v.c2w for v in views])
        k_known = np.stack(
            [t.intrinsics_to_network(v.k) for t, v in zip(batch.transforms, views, strict=True)]
        )
        k_known[:, :2, 2] += 0.5  # pixel-centre convention of rays_to_pose
        windows.append((rays, truth, k_known))

    print(
        f"Synthetic 4-camera rig, 640x480 -> {tuple(windows[0][0].shape[2:4])} network px, "
        f"{args.windows} windows x 8 views x {args.seeds} seeds\n"
    )
    print("| noise | σ | rot. err. est. K (deg) | rot. err. known K (deg) | transl. err. est. K (m)"
          " | transl. err. known K (m) | focal err. est. K (%) |")
    print("|---|---|---|---|---|---|---|")
    for model in MODELS:
        for sigma in NOISE_LEVELS:
            if sigma == 0.0 and model != "pixel":
                continue
            rows = []
            for seed in range(args.seeds):
                gen = torch.Generator().manual_seed(seed)
                for rays, truth, k_known in windows:
                    noisy = add_noise(rays, model, sigma, gen).float()
                    estimated = rays_to_pose(noisy)
                    known = rays_to_pose(noisy, intrinsics=k_known)
                    focal = estimated.intrinsics[0, :, 0, 0].double().numpy()
                    focal_err = np.abs(focal / k_known[:, 0, 0] - 1).mean() * 100
                    rows.append((*errors(estimated, truth), *errors(known, truth), focal_err))
            r_est, t_est, r_known, t_known, f_err = np.mean(rows, axis=0)
            name = "none" if sigma == 0.0 else model
            print(f"| {name} | {sigma:g} | {r_est:.4f} | {r_known:.4f} | {t_est:.5f} | "
                  f"{t_known:.5f} | {f_err:.3f} |")


if __name__ == "__main__":
    main()
