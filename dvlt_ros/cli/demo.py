"""``dvlt-ros demo``: the reconstruction node on a bundled multi-camera sequence.

A synthetic rig (``dvlt_core.synthetic``: textured room, up to four cameras on a moving
base) is published as camera topics on an isolated local ROS network, and
``reconstruct_node`` runs in the same process on those topics with the released weights
(downloaded and cached on first use; ``--checkpoint`` or ``$DVLT_CHECKPOINT`` override
them). Each snapshot is reconstructed once; the per-cycle figures are printed and the
outputs written to ``--out``, all from the node's session: ``points.ply`` (the fused cloud
of the first world epoch; ``points.epoch<N>.ply`` after world resets), ``trajectory.tum``
(the reference camera's path), ``cycles.csv`` and ``run.json`` (per-cycle records, settings, model
identity and licence). ``--backend ground_truth`` answers with the scene's exact geometry
instead of a network (no weights needed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from dvlt_core.io.checkpoint import CheckpointError, default_checkpoint
from dvlt_core.io.download import DownloadError
from dvlt_core.model.precision import PRECISIONS
from dvlt_ros.pipeline.accumulate import FusedCloud, epoch_suffix

BASE_STAMP_NS = 1_700_000_000_000_000_000
OVERRIDE_HINT = (
    "pass --checkpoint <directory | weights file | Hub id> or set DVLT_CHECKPOINT to a local "
    "checkpoint (config.json + model.safetensors); or try --backend ground_truth, which "
    "needs no weights"
)
EXIT_FAILURE = 1
EXIT_NO_MODEL = 3


# The model's 504 px input costs minutes per window on a CPU; 252 px is about 4x fewer tokens.
CPU_IMG_SIZE = 252


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="Hub id[@revision], directory or weights file (default: "
                        "$DVLT_CHECKPOINT, else nvidia/dvlt, downloaded on first use)")
    parser.add_argument("--backend", default="torch",
                        help="inference backend: torch (default), another registered one, or "
                        "ground_truth (exact scene geometry, no weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--num-cameras", type=int, default=3, choices=(1, 2, 3, 4))
    parser.add_argument("--width", type=int, default=640, help="image width (pixels)")
    parser.add_argument("--height", type=int, default=480, help="image height (pixels)")
    parser.add_argument("--snapshots", type=int, default=6,
                        help="rig snapshots to publish, one cycle each")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds of rig motion between snapshots")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="loop steps K (default: the model's)")
    parser.add_argument("--latency-budget-ms", type=float, default=None,
                        help="choose K per cycle to fit this budget (budget mode)")
    parser.add_argument("--window-timesteps", type=int, default=2,
                        help="snapshots per view window (T)")
    parser.add_argument("--img-size", type=int, default=0,
                        help="network input size, longer side (0: the model's; 252 on a CPU)")
    parser.add_argument("--voxel", type=float, default=0.01,
                        help="voxel size of the fused cloud in world units (0: keep all)")
    parser.add_argument("--out", type=Path, default=Path("dvlt_demo_output"),
                        help="output folder")
    parser.add_argument("--use-network", action="store_true",
                        help="use the ROS network configured in the environment instead of "
                        "an isolated loopback-only domain (to watch the demo in RViz)")


def run(args: argparse.Namespace) -> int:
    from dvlt_core.synthetic import default_rig

    if args.snapshots < 1:
        print("dvlt-ros demo: --snapshots must be >= 1", file=sys.stderr)
        return EXIT_FAILURE
    rig = default_rig(width=args.width, height=args.height, num_cameras=args.num_cameras)
    times = [i * args.interval for i in range(args.snapshots)]
    checkpoint = default_checkpoint() if args.checkpoint is None else args.checkpoint
    try:
        backend = _make_backend(args, rig, times, checkpoint)
    except (CheckpointError, DownloadError, OSError) as exc:
        print(f"dvlt-ros demo: cannot load the model from '{checkpoint}': {exc}\n"
              f"To run without downloading, {OVERRIDE_HINT}.", file=sys.stderr)
        return EXIT_NO_MODEL
    if args.img_size == 0 and args.backend != "ground_truth" and backend.device.type == "cpu":
        args.img_size = CPU_IMG_SIZE
        print(f"running on the CPU: network input {CPU_IMG_SIZE} px on the longer side to keep "
              "cycles short (--img-size 504 for the model's full size, --device cuda on a GPU)",
              flush=True)
    if not args.use_network:
        from dvlt_ros.testing.ros_network import isolate_ros_network

        isolate_ros_network()
    return _run_node(args, rig, times, backend, checkpoint)


def _make_backend(args, rig, times, checkpoint):
    if args.backend == "ground_truth":
        from dvlt_core.backends.ground_truth import GroundTruthBackend

        return GroundTruthBackend.for_rig(rig, times, img_size=args.img_size or 504)
    from dvlt_core.backends import create_backend
    from dvlt_core.device import resolve_device

    print(f"loading {args.backend} model from {checkpoint} ...", flush=True)
    return create_backend(args.backend, checkpoint=checkpoint,
                          device=str(resolve_device(args.device)), precision=args.precision)


def _run_node(args, rig, times, backend, checkpoint: str) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from dvlt_ros.nodes.reconstruct_node import ReconstructNode

    params = {
        "cameras": rig.names,
        "input_qos": "reliable",
        "rate": 20.0,
        "camera_timeout": 1e4,  # the demo publishes a snapshot only after each cycle
        "window_timesteps": args.window_timesteps,
        "max_views": max(8, args.num_cameras * args.window_timesteps),
        "num_steps": args.num_steps or backend.default_num_steps,
        "img_size": args.img_size,
        "checkpoint": "" if args.backend == "ground_truth" else checkpoint,
    }
    if args.latency_budget_ms is not None:
        params.update(num_steps_mode="budget", latency_budget_ms=args.latency_budget_ms)
    context = rclpy.Context()
    rclpy.init(context=context)
    recorder = DemoRecorder()
    node = source = None
    executor = SingleThreadedExecutor(context=context)
    try:
        node = ReconstructNode(
            backend=backend, context=context, fused=FusedCloud(args.voxel),
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        node.add_cycle_listener(recorder.on_cycle)
        source = SyntheticRigPublisher(rig, context)
        executor.add_node(node)
        executor.add_node(source.node)
        if not _spin_until(executor, source.connected, 30):
            print("dvlt-ros demo: the node did not subscribe to the camera topics",
                  file=sys.stderr)
            return EXIT_FAILURE
        print(_TABLE_HEADER, flush=True)
        for t in times:
            stamp = source.publish(t)
            done = _spin_until(executor, lambda s=stamp: recorder.has(s), 3600)
            if not done:
                print(f"dvlt-ros demo: no cycle for the snapshot at t={t:.2f} s; see the node's "
                      "log above", file=sys.stderr)
                return EXIT_FAILURE
            print(_row(recorder.reports[-1]), flush=True)
        recorder.write(args.out, node, backend, params, args)
    finally:
        if node is not None:
            node.destroy_node()
        if source is not None:
            source.node.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
    return 0


def _spin_until(executor, condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)
    return bool(condition())


class SyntheticRigPublisher:
    """Publishes a synthetic rig's images on ``<camera>/image_raw`` (reliable)."""

    def __init__(self, rig, context) -> None:
        import rclpy
        from sensor_msgs.msg import Image

        from dvlt_ros.node_support.qos import input_qos

        self.rig = rig
        self.node = rclpy.create_node("dvlt_demo_rig", context=context)
        self.publishers = {
            name: self.node.create_publisher(Image, f"{name}/image_raw", input_qos("reliable"))
            for name in rig.names
        }

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.publishers.values())

    def publish(self, t: float) -> int:
        """Publish every camera at rig time ``t``; return the stamp (ns)."""
        from std_msgs.msg import Header

        from dvlt_ros.conversions.image import array_to_image
        from dvlt_ros.conversions.tf import stamp_from_ns

        stamp = BASE_STAMP_NS + round(t * 1e9)
        for view in self.rig.snapshot(t):
            header = Header(stamp=stamp_from_ns(stamp),
                            frame_id=self.rig.camera(view.camera).optical_frame)
            self.publishers[view.camera].publish(array_to_image(view.image, "rgb8", header))
        return stamp


_COLUMNS = ("cycle", "K", "S", "points", "sync", "prep", "infer", "pose", "world", "prod",
            "publish", "total")
_TABLE_HEADER = (
    " ".join(f"{c:>7}" for c in _COLUMNS) + "\n" + " ".join(["-------"] * len(_COLUMNS))
    + "   (times in ms)"
)


def _row(report) -> str:
    values = (
        report.cycle, report.num_steps, report.num_views, report.points, report.sync_wait_ms,
        report.preprocess_ms, report.inference_ms, report.pose_fit_ms, report.world_ms,
        report.products_ms, report.publish_ms, report.total_ms,
    )
    return " ".join(f"{v:7d}" if isinstance(v, int) else f"{v:7.1f}" for v in values)


class DemoRecorder:
    """Collects every cycle's report (called on the node's worker thread)."""

    def __init__(self) -> None:
        self.reports = []
        self._stamps: set[int] = set()
        self.units = "arbitrary"

    def on_cycle(self, report, result) -> None:
        self.units = result.units
        self.reports.append(report)
        self._stamps.add(report.stamp_ns)

    def has(self, stamp_ns: int) -> bool:
        return stamp_ns in self._stamps

    def write(self, out: Path, node, backend, params: dict, args) -> None:
        out.mkdir(parents=True, exist_ok=True)
        session = node.session
        fused_points = sum(session.fused.write(out / f"points{epoch_suffix(epoch)}.ply", epoch)
                           for epoch in session.fused.epochs or [0])
        session.trajectories.write_path_tum(out / "trajectory.tum")
        records = [r.as_dict() for r in self.reports]
        with open(out / "cycles.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        model = node.model
        summary = {
            "model": model.identity if model else backend.name,
            "licence": model.licence if model else "",
            "units": self.units,
            "world_frame": node.params["world_frame"],
            "parameters": params,
            "cycles": records,
            "fused_points": fused_points,
        }
        (out / "run.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        unit = "metres" if self.units == "m" else "arbitrary units (network scale)"
        totals = [r.total_ms for r in self.reports]
        print(f"\n{len(self.reports)} cycles, median cycle {np.median(totals):.0f} ms; "
              f"fused cloud {fused_points} points in {unit}.")
        print(f"wrote {out / 'points.ply'}, {out / 'trajectory.tum'}, {out / 'cycles.csv'}, "
              f"{out / 'run.json'}")
        if model is not None:
            print(f"model: {model.identity}\nlicence: {model.licence}")
        if args.backend != "ground_truth" and not (args.checkpoint
                                                   or os.environ.get("DVLT_CHECKPOINT")):
            print("(override the weights with --checkpoint or DVLT_CHECKPOINT)")
