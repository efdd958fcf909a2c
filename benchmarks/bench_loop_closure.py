"""Loop closure on synthetic loops: ATE/RPE before and after, closures, optimisation time.

    python benchmarks/bench_loop_closure.py [--snapshots 120] [--laps 2] [--cameras 2]
        [--noise 1 2 4] [--memory-snapshots 60 120 240 360]

A synthetic rig drives its circle through the textured room for ``laps`` laps (it is back at
its start after each; ``dvlt-ros sample-bag --path loop --laps``), ``snapshots`` snapshots in
all; ``ground_truth_unscaled`` reconstructs windows of two snapshots at ``noise`` times its
default pose noise (0.05° / 2 mm per view per axis; depth 1 %, rays 0.001, a random scale per
window), so the shared-view chain drifts. The frames go through the real
:class:`ReconstructionSession` with ``loop_closure`` on (as ``dvlt-ros process`` and the node
run it): every window a keyframe, descriptors from the small deterministic-weight DVLT encoder
(the ground-truth backend has none), retrieval, ``close_loops`` after each cycle verifying up
to ``loop_verify_per_cycle`` (2) candidates, the GTSAM graph. ATE is the RMS error of the
reference camera's keyframe positions (chained, and loop-corrected: ``map_path``) after a
Sim(3) (Umeyama) alignment to the truth, RPE the RMS of consecutive relative translation
errors after that alignment; a loop is false when its measured relative rotation is more
than 1° off the truth or the two keyframes are more than 1 m apart. The same on the
repeated-texture room counts false loops there. Then the optimisation time per cycle of a
synthetic Sim(3) graph (a chain, and a loop edge every 10 keyframes after the first lap)
against its size: ``optimise()`` and reading the newest node's pose (what a cycle does).
Last, memory against bag length: one session driving the loop for the longest of
``memory_snapshots`` (60 snapshots a lap, 1x noise), with the process's resident memory and
what the loop structures hold after each of those counts.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.eval.alignment import umeyama_alignment
from dvlt_core.geometry import Sim3, rotation_angle, rotation_from_vector
from dvlt_core.mapping import EdgeSigmas, EncoderDescriber, PoseGraph
from dvlt_core.model import DVLTModel
from dvlt_core.synthetic import default_rig, repeated_texture_scene
from dvlt_core.testing import load_deterministic_weights
from dvlt_ros.pipeline import CameraFrame
from dvlt_ros.pipeline.session import ReconstructionSession
from dvlt_ros.pipeline.settings import load_parameters

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


def loop_session(model, rig, backend):
    params = load_parameters(None, {
        "cameras": list(rig.names), "img_size": IMG_SIZE, "num_steps": 1,
        "window_timesteps": 2, "keyframe_min_spacing": 0.0, "camera_timeout": 1e4,
        "loop_closure": True, "loop_verify_per_cycle": 2})
    session = ReconstructionSession(params, describer=EncoderDescriber(model, IMG_SIZE))
    session.install_backend(backend)
    return session


def cycle(session, rig, t) -> float | None:
    """One snapshot through the session and its spare-time verification; the verification
    milliseconds when a candidate was verified."""
    stamp = round(t * 1e9)
    for view in rig.snapshot(t):
        session.add_frame(CameraFrame(view.camera, stamp,
                                      rig.camera(view.camera).optical_frame, view.image),
                          stamp)
    snapshot, _ = session.poll(stamp)
    session.finish(session.reconstruct(snapshot, stamp), 0.0, 0)
    start = time.perf_counter()
    if session.close_loops():
        return (time.perf_counter() - start) * 1e3
    return None


def run_loop(model, snapshots, laps, cameras, noise, scene=None):
    rig = default_rig(160, 120, num_cameras=cameras, scene=scene)
    lap = rig.trajectory.lap_time
    times = [i * lap * laps / snapshots for i in range(snapshots)]
    backend = GroundTruthUnscaledBackend.for_rig(
        rig, times, img_size=IMG_SIZE, rotation_noise_deg=0.05 * noise,
        position_noise=0.002 * noise)
    session = loop_session(model, rig, backend)
    verify_ms = [ms for ms in (cycle(session, rig, t) for t in times) if ms is not None]
    ref = rig.names[0]
    truth = np.array([rig.camera_pose(ref, t)[:3, 3] for t in times])
    closer = session.loop_map.closer
    false = 0
    for edge in closer.graph.edges:
        if edge.kind != "loop":
            continue
        a, b = (rig.camera_pose(ref, times[n]) for n in (edge.a, edge.b))
        error = np.degrees(rotation_angle(edge.a_from_b.rotation, a[:3, :3].T @ b[:3, :3]))
        false += error > 1.0 or np.linalg.norm(a[:3, 3] - b[:3, 3]) > 1.0
    before = ate_rpe(np.array([p[:3, 3] for _, p in session.trajectories.path]), truth)
    after = ate_rpe(np.array([p[:3, 3] for _, p in session.map_path()]), truth)
    return before, after, closer.counts, false, verify_ms


def memory_rows(model, counts, cameras):
    """After each of ``counts`` snapshots of one long loop run: resident memory (max so far,
    MiB) and what the loop structures hold."""
    rig = default_rig(160, 120, num_cameras=cameras)
    lap = rig.trajectory.lap_time
    times = [i * lap / 60 for i in range(max(counts))]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE)
    session = loop_session(model, rig, backend)
    rows = []
    for i, t in enumerate(times):
        cycle(session, rig, t)
        if i + 1 in counts:
            loop_map = session.loop_map
            closer = loop_map.closer
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append((i + 1, rss, len(closer.graph), len(closer.graph.edges),
                         len(closer.keyframes), closer.image_bytes / 2**20, len(closer.verdicts),
                         len(loop_map.keyframes), len(session.map_cloud)))
    return rows


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
        start = time.perf_counter()
        graph.optimise()
        graph.pose(i)
        times.append((time.perf_counter() - start) * 1e3)
        if i + 1 in sizes:
            recent = times[-10:]
            rows.append((i + 1, float(np.median(recent)), float(np.max(recent))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snapshots", type=int, default=120)
    parser.add_argument("--laps", type=float, default=2.0)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--noise", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--memory-snapshots", type=int, nargs="+", default=[60, 120, 240, 360])
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = small_model(args.reference)
    print(f"{args.cameras}-camera rig 160x120 -> img_size {IMG_SIZE}, {args.snapshots} "
          f"snapshots over {args.laps:g} laps (radius 1.5 m), windows of 2 snapshots, "
          "ground_truth_unscaled, through ReconstructionSession\n")
    print("| scene | pose noise | ATE before (m) | ATE after (m) | after / before | RPE before / "
          "after (m) | candidates | verified | accepted | false | local verified / accepted | "
          "verify ms (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    runs = [("room", n, None) for n in args.noise] + [("repeated texture", 1.0,
                                                       repeated_texture_scene())]
    for name, noise, scene in runs:
        before, after, counts, false, verify_ms = run_loop(model, args.snapshots, args.laps,
                                                           args.cameras, noise, scene)
        print(f"| {name} | {noise:g}x | {before[0]:.4f} | {after[0]:.4f} | "
              f"{after[0] / before[0]:.3f} | {before[1]:.4f} / {after[1]:.4f} | "
              f"{counts.candidates} | {counts.verified} | {counts.accepted} | {false} | "
              f"{counts.local_verified} / {counts.local_accepted} | "
              f"{np.median(verify_ms) if verify_ms else float('nan'):.0f} |", flush=True)
    print("\n| keyframes | ms per optimisation (median of 10 cycles) | max of those |")
    print("|---|---|---|")
    for size, median, worst in graph_timing([50, 100, 200, 300, 400, 500]):
        print(f"| {size} | {median:.2f} | {worst:.2f} |", flush=True)
    print("\n| snapshots | max RSS (MiB) | graph nodes | edges | keyframes held | their images "
          "(MiB) | verdicts kept | path poses | map cloud points |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in memory_rows(model, sorted(args.memory_snapshots), args.cameras):
        print("| {} | {:.0f} | {} | {} | {} | {:.1f} | {} | {} | {} |".format(*row), flush=True)


if __name__ == "__main__":
    main()
