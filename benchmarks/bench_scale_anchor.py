"""Metric scale and TF anchoring through ReconstructionSession, on the synthetic rig.

    python benchmarks/bench_scale_anchor.py [--snapshots 20] [--size 320x240] [--img-size 252]

A synthetic 3-camera rig drives its circle; ``ground_truth_unscaled`` (a random scale per
window; default noise 0.05° / 2 mm pose noise, 1 % depth noise, 0.001 ray noise, and the
same times 2 and 4) reconstructs windows of up to three snapshots. The robot's TF is a
``TfTree`` with the rig's true mounts (static ``base_link -> <optical frame>``) and
motion (``odom -> base_link`` at 20 Hz); the depth sensor is the true depth, registered,
fed through ``add_depth``. Everything runs through the real session (synchroniser, window
selector, pose fit, grounding, world placement, products), as the node and
``dvlt-ros process`` do:

* scale error per source (``scale_source`` rig, odometry, depth; anchor chain): the
  session's scale in use against the window's true one, ``|estimate / truth − 1|``, median
  and maximum over the windows with a metric scale;
* reference-camera ATE per scale source and noise level, with ``anchor: tf``
  (``world_frame: odom``) and ``anchor: chain``: the published pose of the first camera
  against its true pose, as published (no alignment at all; ``tf`` only, where the world is
  ``odom``) and after SE(3) alignment of the whole trajectory (rotation and translation, no
  scale, so a wrong scale shows), RMS over the cycles and as a fraction of the path length;
* per-cycle cost: TF lookups (``CycleReport.tf_ms``) and rectifying a distorted image
  (``prepare_frame`` with plumb_bob CameraInfo: first frame with the map computation, then
  per frame with the cached maps).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.eval.alignment import umeyama_alignment
from dvlt_core.geometry import TfTree
from dvlt_core.io.rectify import Rectifier
from dvlt_core.synthetic import default_rig
from dvlt_ros.pipeline import CameraFrame, CameraInfoData, prepare_frame
from dvlt_ros.pipeline.scale import MeasuredDepth
from dvlt_ros.pipeline.session import ReconstructionSession
from dvlt_ros.pipeline.settings import load_parameters

NOISE = {"rotation_noise_deg": 0.05, "position_noise": 0.002, "depth_noise": 0.01,
         "ray_noise": 0.001}


def rig_tf(rig, end_s: float) -> TfTree:
    tree = TfTree()
    for name in rig.names:
        camera = rig.camera(name)
        tree.set_transform("base_link", camera.optical_frame, camera.base_from_camera)
    for t in np.arange(0.0, end_s + 1e-9, 0.05):
        tree.set_transform("odom", "base_link", rig.world_from_base(t), round(t * 1e9))
    return tree


def run(rig, times, backend, tree, img_size, **settings):
    """One session over ``times``: per cycle (result, report, true metres per unit)."""
    params = load_parameters(None, {
        "cameras": list(rig.names), "img_size": img_size, "num_steps": 3,
        "window_timesteps": 3, "max_views": 9, "keyframe_min_spacing": 0.0,
        "camera_timeout": 1e4, **settings})
    session = ReconstructionSession(params, transforms=tree)
    session.install_backend(backend)
    done = []
    for t in times:
        stamp = round(t * 1e9)
        for view in rig.snapshot(t):
            frame_id = rig.camera(view.camera).optical_frame
            session.add_frame(CameraFrame(view.camera, stamp, frame_id, view.image), stamp)
            session.add_depth(view.camera, stamp, MeasuredDepth(view.depth))
        snapshot, _ = session.poll(stamp)
        cycle = session.reconstruct(snapshot, stamp)
        report = session.finish(cycle, publish_ms=0.0, points=len(cycle.result.cloud))
        done.append((cycle.result, report, backend.last_draw.metres_per_unit))
    return done


def scale_table(rig, times, tree, img_size, seed) -> list[str]:
    rows = ["| source | noise | windows metric | scale error median / max (%) |",
            "|---|---|---|---|"]
    for factor in (1, 2, 4):
        noise = {name: value * factor for name, value in NOISE.items()}
        backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=img_size, seed=seed,
                                                     **noise)
        for source in ("rig", "odometry", "depth"):
            done = run(rig, times, backend, tree, img_size, scale_source=source)
            errors = np.array([abs(r.grounding.metres_per_unit / truth - 1)
                               for r, _, truth in done if r.grounding.metric]) * 100
            rows.append(f"| {source} | x{factor} | {len(errors)} / {len(done)} | "
                        f"{np.median(errors):.3f} / {errors.max():.3f} |")
    return rows


def ate_table(rig, times, tree, img_size, seed) -> tuple[list[str], list[float]]:
    """Reference-camera ATE per scale source, anchor and noise level: as published, and after
    an SE(3) alignment to the truth (no scale fit, so a scale error shows)."""
    reference = rig.names[0]
    truth = np.stack([rig.camera_pose(reference, t)[:3, 3] for t in times])
    path = float(np.linalg.norm(np.diff(truth, axis=0), axis=1).sum())
    rows = [f"Reference camera ({reference}) path length {path:.2f} m; with `anchor: chain` the "
            "world is the first reference optical frame, so only the SE(3)-aligned column "
            "compares.", "",
            "| anchor | scale_source | noise | cycles metric / anchored | ATE as published RMS "
            "(m) | after SE(3) alignment RMS (m) | max (m) | RMS / path (%) |",
            "|---|---|---|---|---|---|---|---|"]
    tf_ms = []
    cases = [("tf", source) for source in ("rig", "odometry", "depth", "none")]
    cases += [("chain", source) for source in ("rig", "odometry", "depth")]
    for factor in (1, 2, 4):
        noise = {name: value * factor for name, value in NOISE.items()}
        backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=img_size, seed=seed,
                                                     **noise)
        for anchor, source in cases:
            frames = {"world_frame": "odom"} if anchor == "tf" else {}
            done = run(rig, times, backend, tree, img_size, scale_source=source, anchor=anchor,
                       **frames)
            if anchor == "tf" and factor == 1:
                tf_ms += [report.tf_ms for _, report, _ in done]
            placed = np.stack([next(p for p in r.poses if p.camera == reference)
                               .world_from_camera[:3, 3] for r, _, _ in done])
            metric = sum(r.grounding.metric for r, _, _ in done)
            anchored = sum(report.anchor == "tf" for _, report, _ in done)
            raw = np.linalg.norm(placed - truth, axis=1)
            rotation, translation, _ = umeyama_alignment(
                torch.from_numpy(placed.T), torch.from_numpy(truth.T), with_scale=False)
            aligned = placed @ rotation.numpy().T + translation.numpy()
            errors = np.linalg.norm(aligned - truth, axis=1)
            rms = float(np.sqrt(np.mean(errors**2)))
            published = f"{np.sqrt(np.mean(raw**2)):.4f}" if anchor == "tf" else "-"
            rows.append(f"| {anchor} | {source} | x{factor} | {metric} / {anchored} | "
                        f"{published} | {rms:.4f} | {errors.max():.4f} | "
                        f"{rms / path * 100:.3f} |")
    return rows, tf_ms


def rectification_ms(width: int, height: int, repeats: int = 20) -> tuple[float, float]:
    """Milliseconds of prepare_frame on a plumb_bob image: first call (maps), then median."""
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    k = np.array([[0.6 * width, 0, width / 2], [0, 0.6 * width, height / 2], [0, 0, 1]])
    info = CameraInfoData(k, width, height, "plumb_bob", (-0.25, 0.08, 0.001, -0.0015, -0.01))
    rectifier = Rectifier("k")
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        prepare_frame(CameraFrame("cam", i + 1, "f", rgb, info), max_pixels=None,
                      img_size=504, rectifier=rectifier)
        times.append((time.perf_counter() - start) * 1e3)
    return times[0], float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.4, help="seconds between snapshots")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--img-size", type=int, default=252)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rig = default_rig(width, height, num_cameras=3)
    times = [args.spacing * i for i in range(args.snapshots)]
    tree = rig_tf(rig, times[-1])
    start = time.perf_counter()
    print(f"3-camera rig {width}x{height} -> img_size {args.img_size}, {args.snapshots} "
          f"snapshots {args.spacing} s apart, windows of up to 3 snapshots, "
          "ground_truth_unscaled (noise x1 = its default), through ReconstructionSession\n")
    print("\n".join(scale_table(rig, times, tree, args.img_size, args.seed)))
    print()
    rows, tf_ms = ate_table(rig, times, tree, args.img_size, args.seed)
    print("\n".join(rows))
    print("\n| per-cycle cost | ms |\n|---|---|")
    print(f"| TF lookups of a cycle (anchor tf; with rig: + mounts), median / max | "
          f"{np.median(tf_ms):.3f} / {max(tf_ms):.3f} |")
    rectification_ms(64, 48, repeats=1)  # OpenCV's import is not part of the cost
    for w, h in ((width, height), (1280, 720)):
        first, cached = rectification_ms(w, h)
        print(f"| rectify one {w}x{h} plumb_bob frame: first (maps) / cached | "
              f"{first:.2f} / {cached:.2f} |")
    print(f"\n(benchmark wall time {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
