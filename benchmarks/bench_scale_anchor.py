"""Scale error per source and TF-anchored pose error of the ROS-free building blocks.

    python benchmarks/bench_scale_anchor.py [--snapshots 20] [--size 320x240] [--img-size 252]

A synthetic 3-camera rig drives its circle; ``ground_truth_unscaled`` (default noise: a
random scale per window, 0.05° / 2 mm pose noise, 1 % depth noise, 0.001 ray noise)
reconstructs windows of up to three snapshots made by the real synchroniser and window
selector. Per window:

* scale from ``rig`` (TF-style mounts), ``odometry`` (the base's true motion as
  ``odom -> base``) and ``depth`` (the true depth as a registered sensor), raw and smoothed
  (:class:`ScaleSmoother`, with the window's scale relative to the world taken from
  :class:`WorldAligner`'s shared-view chain as the reference);
* TF anchoring of the window on the cameras' true poses (the robot's ``odom``): Sim(3), and
  SE(3) with the smoothed rig scale; the error of the reference camera's anchored centre is
  reported as RMS over windows and as a fraction of the reference camera's path length.

Scale errors are ``|estimate / truth − 1|``: median and maximum over the windows with an
estimate (the first window has one snapshot: no odometry). Not yet what the node does: the
node does not call these blocks (see docs/world_frame.md).
"""

from __future__ import annotations

import argparse

import numpy as np

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.inference import Reconstructor
from dvlt_core.synthetic import default_rig
from dvlt_ros.pipeline import WindowConfig, WorldAligner
from dvlt_ros.pipeline.anchor import Anchor, anchor_reconstruction
from dvlt_ros.pipeline.scale import (
    MeasuredDepth,
    ScaleEstimate,
    ScaleSmoother,
    depth_scale,
    odometry_scale,
    rig_scale,
)
from dvlt_ros.pipeline.synthetic_windows import rig_windows


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
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=args.img_size, seed=args.seed)
    mounts = {rig.camera(n).optical_frame: rig.camera(n).base_from_camera for n in rig.names}

    def odom(stamp_ns: int) -> np.ndarray:
        return rig.world_from_base(stamp_ns * 1e-9)

    chain = WorldAligner()
    smoothers = {source: ScaleSmoother() for source in ("rig", "odometry", "depth")}
    raw = {source: [] for source in smoothers}
    smooth = {source: [] for source in smoothers}
    anchored = {"Sim(3)": [], "SE(3), smoothed rig scale": []}
    reference_path = []
    config = WindowConfig(max_timesteps=3, max_views=9, keyframe_min_spacing_ns=0)
    for window in rig_windows(rig, times, config):
        recon = Reconstructor(backend).reconstruct([f.rgb for f in window.frames])
        truth = backend.last_draw.metres_per_unit
        reference = chain.place(window, recon).world_from_window.scale
        sensors = [
            MeasuredDepth(rig.render(f.camera, f.stamp_ns * 1e-9).depth) for f in window.frames
        ]
        outcomes = {
            "rig": rig_scale(window, recon, mounts),
            "odometry": odometry_scale(window, recon, odom, mounts),
            "depth": depth_scale(recon, sensors),
        }
        states = {}
        for source, outcome in outcomes.items():
            states[source] = state = smoothers[source].update(outcome, reference)
            if isinstance(outcome, ScaleEstimate):
                raw[source].append(abs(outcome.metres_per_unit / truth - 1))
            if state is not None:
                smooth[source].append(abs(state.metres_per_unit / truth - 1))
        tf = [rig.camera_pose(f.camera, f.stamp_ns * 1e-9) for f in window.frames]
        for name, fixed in (("Sim(3)", None), ("SE(3), smoothed rig scale", states["rig"])):
            scale = None if fixed is None else fixed.metres_per_unit
            anchor = anchor_reconstruction(recon, tf, fixed_scale=scale)
            if isinstance(anchor, Anchor):
                placed = anchor.world_from_window.apply_c2w(recon.views[0].extrinsics_c2w)
                anchored[name].append(np.linalg.norm(placed[:3, 3] - tf[0][:3, 3]))
        reference_path.append(tf[0][:3, 3])

    path = float(np.linalg.norm(np.diff(np.stack(reference_path), axis=0), axis=1).sum())
    print(
        f"3-camera rig {width}x{height} -> img_size {args.img_size}, {args.snapshots} "
        f"snapshots {args.spacing} s apart, windows of up to 3 snapshots, "
        "ground_truth_unscaled default noise\n"
    )
    print("| source | windows | raw scale error median / max (%) | smoothed median / max (%) |")
    print("|---|---|---|---|")
    for source in smoothers:
        r, s = np.array(raw[source]) * 100, np.array(smooth[source]) * 100
        print(
            f"| {source} | {len(r)} | {np.median(r):.3f} / {r.max():.3f} | "
            f"{np.median(s):.3f} / {s.max():.3f} |"
        )
    print(f"\nReference camera path length {path:.2f} m.\n")
    print("| anchor | windows | reference-camera error RMS (m) | max (m) | RMS / path length (%) |")
    print("|---|---|---|---|---|")
    for name, errors in anchored.items():
        e = np.array(errors)
        rms = float(np.sqrt(np.mean(e**2)))
        print(f"| {name} | {len(e)} | {rms:.4f} | {e.max():.4f} | {rms / path * 100:.3f} |")


if __name__ == "__main__":
    main()
