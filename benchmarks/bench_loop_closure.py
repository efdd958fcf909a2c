"""Loop closure on synthetic loops: ATE/RPE before and after, closures, optimisation time.

    python benchmarks/bench_loop_closure.py [--snapshots 120] [--cameras 2] [--noise 1 2 4]

A synthetic rig drives its circle through the textured room for 1.1 laps (it is back at its
start after one); ``ground_truth_unscaled`` reconstructs windows of two snapshots made by the
real synchroniser and window selector, at ``noise`` times its default pose noise (0.05° /
2 mm per view per axis; depth 1 %, rays 0.001, a random scale per window), so the shared-view
chain of :class:`WorldAligner` drifts. Every window becomes a keyframe of
:class:`LoopCloser`: descriptors from the small deterministic-weight DVLT encoder (the
ground-truth backend has none), retrieval, verification of up to two candidates per window,
the GTSAM graph. ATE is the RMS error of the reference camera's keyframe positions after a
Sim(3) (Umeyama) alignment to the truth, RPE the RMS of consecutive relative translation
errors after that alignment; a loop is false when its measured relative rotation is more
than 1° off the truth or the two keyframes are more than 1 m apart. The same on the
repeated-texture room counts false loops there. Last, the optimisation time per cycle of a
synthetic Sim(3) graph (a chain, and a loop edge every 10 keyframes after the first lap)
against its size.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.eval.alignment import umeyama_alignment
from dvlt_core.geometry import Sim3, rotation_angle, rotation_from_vector
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping import EdgeSigmas, EncoderDescriber, PoseGraph
from dvlt_core.mapping.loop_closer import LoopCloser
from dvlt_core.model import DVLTModel
from dvlt_core.synthetic import default_rig, repeated_texture_scene
from dvlt_core.testing import load_deterministic_weights
from dvlt_ros.pipeline import WorldAligner
from dvlt_ros.pipeline.synthetic_windows import rig_windows

IMG_SIZE = 112
REFERENCE = Path("/work/shared/reference")


def small_model(reference: Path) -> DVLTModel:
    case = np.load(reference / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return model.eval()


def aligned(positions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    r, t, c = (x.numpy() for x in umeyama_alignment(torch.from_numpy(positions.T),
                                                    torch.from_numpy(truth.T)))
    return c * positions @ r.T + t


def ate_rpe(positions: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    est = aligned(positions, truth)
    ate = float(np.sqrt(np.mean(np.sum((est - truth) ** 2, axis=1))))
    rpe = float(np.sqrt(np.mean(np.sum((np.diff(est, axis=0) - np.diff(truth, axis=0)) ** 2,
                                       axis=1))))
    return ate, rpe


def run_loop(model, snapshots, cameras, noise, scene=None):
    rig = default_rig(160, 120, num_cameras=cameras, scene=scene)
    lap = rig.trajectory.lap_time
    times = [i * lap * 1.1 / snapshots for i in range(snapshots)]
    backend = GroundTruthUnscaledBackend.for_rig(
        rig, times, img_size=IMG_SIZE, rotation_noise_deg=0.05 * noise,
        position_noise=0.002 * noise)
    reconstructor = Reconstructor(backend, img_size=IMG_SIZE)
    closer = LoopCloser(reconstructor, EncoderDescriber(model, IMG_SIZE))
    world = WorldAligner()
    verify_ms = []
    for window in rig_windows(rig, times):
        recon = reconstructor.reconstruct([f.rgb for f in window.frames], 1)
        placement = world.place(window, recon)
        newest = [i for i, step in enumerate(window.timesteps) if step == 0]
        closer.add_window(window.keys, [f.rgb for f in window.frames], recon, newest,
                          placement.world_from_window)
        start = time.perf_counter()
        if closer.verify_pending(limit=2):
            verify_ms.append((time.perf_counter() - start) * 1e3)
    ref = rig.names[0]
    truth = np.array([rig.camera_pose(ref, t)[:3, 3] for t in times])

    def positions(poses):
        return np.array([poses[n].apply_c2w(closer.keyframes[n].views[0].c2w)[:3, 3]
                         for n in range(snapshots)])

    false = 0
    for v in closer.verdicts:
        if not v.accepted:
            continue
        a, b = (rig.camera_pose(ref, times[n]) for n in (v.current, v.candidate))
        error = np.degrees(rotation_angle(v.current_from_candidate.rotation,
                                          a[:3, :3].T @ b[:3, :3]))
        false += error > 1.0 or np.linalg.norm(a[:3, 3] - b[:3, 3]) > 1.0
    before = ate_rpe(positions({n: closer.graph.initial_pose(n) for n in range(snapshots)}),
                     truth)
    after = ate_rpe(positions(closer.trajectory()), truth)
    return before, after, closer.counts, false, verify_ms


def graph_timing(sizes, seed=0):
    """Milliseconds per optimise() at each size of a growing graph (median of the 10 cycles
    before the size; max of those)."""
    rng = np.random.default_rng(seed)
    n_max = max(sizes)
    lap = n_max // 2
    truth = []
    for i in range(n_max):
        a = 2 * np.pi * i / lap
        truth.append(Sim3(rotation_from_vector(np.array([0.0, 0.0, a + np.pi / 2])),
                          np.array([3 * np.cos(a), 3 * np.sin(a), 0.0]), 1.0))
    sig = EdgeSigmas(0.002, 0.005, 0.002)
    graph = PoseGraph()
    graph.add_node(0, truth[0])
    pose, times, rows = truth[0], [], []
    for i in range(1, n_max):
        rel = truth[i - 1].inverse().compose(truth[i])
        noisy = Sim3(rel.rotation @ rotation_from_vector(rng.normal(0, 0.002, 3)),
                     rel.translation + rng.normal(0, 0.005, 3),
                     float(np.exp(rng.normal(0, 0.002))))
        pose = pose.compose(noisy)
        graph.add_node(i, pose)
        graph.add_edge(i - 1, i, noisy, sig)
        if i >= lap and i % 10 == 0:
            graph.add_edge(i, i - lap, truth[i].inverse().compose(truth[i - lap]), sig, "loop")
        times.append(graph.optimise().ms)
        if i + 1 in sizes:
            recent = times[-10:]
            rows.append((i + 1, float(np.median(recent)), float(np.max(recent))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snapshots", type=int, default=120)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--noise", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = small_model(args.reference)
    print(f"{args.cameras}-camera rig 160x120 -> img_size {IMG_SIZE}, {args.snapshots} "
          "snapshots over 1.1 laps (radius 1.5 m), windows of 2 snapshots, ground_truth_unscaled\n")
    print("| scene | pose noise | ATE before (m) | ATE after (m) | after / before | RPE before / "
          "after (m) | candidates | verified | accepted | false | verify ms (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    runs = [("room", n, None) for n in args.noise] + [("repeated texture", 1.0,
                                                       repeated_texture_scene())]
    for name, noise, scene in runs:
        before, after, counts, false, verify_ms = run_loop(model, args.snapshots, args.cameras,
                                                           noise, scene)
        print(f"| {name} | {noise:g}x | {before[0]:.4f} | {after[0]:.4f} | "
              f"{after[0] / before[0]:.2f} | {before[1]:.4f} / {after[1]:.4f} | "
              f"{counts.candidates} | {counts.verified} | {counts.accepted} | {false} | "
              f"{np.median(verify_ms) if verify_ms else float('nan'):.0f} |", flush=True)
    print("\n| keyframes | ms per optimisation (median of 10 cycles) | max of those |")
    print("|---|---|---|")
    for size, median, worst in graph_timing([50, 100, 200, 300, 400, 500]):
        print(f"| {size} | {median:.1f} | {worst:.1f} |")


if __name__ == "__main__":
    main()
