"""``dvlt-ros demo``: the reconstruction node on a bundled multi-camera sequence.

A synthetic rig (``dvlt_core.synthetic``: textured room, up to four cameras on a moving
base) publishes what a robot publishes on an isolated local ROS network: per camera
``<cam>/image_raw`` and ``<cam>/camera_info``, ``/tf_static`` (``base_link`` -> each
camera's optical frame, transient local), ``/tf`` (``odom`` -> ``base_link``, the rig's true
motion, at the image stamps; ``odom`` is the scene's frame) and, with ``--depth``,
``<cam>/depth/image_raw`` (16UC1 millimetres of the scene's true depth, registered to the
colour image) with ``<cam>/depth/camera_info``. ``reconstruct_node`` runs in the same
process on those topics with the released weights (downloaded and cached on first use;
``--checkpoint`` or ``$DVLT_CHECKPOINT`` override them), grounded by ``--scale-source`` and
``--anchor`` (``tf``: the world frame is ``odom``). Each snapshot is reconstructed once; the
per-cycle figures are printed and the outputs written to ``--out``, all from the node's
session: ``points.ply`` (the fused cloud of the first world epoch; ``points.epoch<N>.ply``
after world resets), ``trajectory.tum`` (the reference camera's path), ``ground_truth.tum``
(its true optical-frame poses at the same stamps in the output world frame, metres:
``odom`` with ``--anchor tf``, else the first reference pose's world), ``cycles.csv`` and
``run.json`` (per-cycle records, settings, model identity and licence). ``--backend
ground_truth`` answers with the scene's exact geometry instead of a network (no weights
needed); ``ground_truth_unscaled`` like an up-to-scale network (a random scale per window,
pose and depth noise), to be grounded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dvlt_core.io.checkpoint import CheckpointError, default_checkpoint
from dvlt_core.io.download import DownloadError
from dvlt_core.model.precision import PRECISIONS
from dvlt_ros.pipeline.accumulate import FusedCloud, epoch_suffix
from dvlt_ros.pipeline.settings import ANCHORS, SCALE_SOURCES

BASE_STAMP_NS = 1_700_000_000_000_000_000
OVERRIDE_HINT = (
    "pass --checkpoint <directory | weights file | Hub id> or set DVLT_CHECKPOINT to a local "
    "checkpoint (config.json + model.safetensors); or try --backend ground_truth, which "
    "needs no weights"
)
#: Backends answering with the synthetic scene's geometry (no weights).
GROUND_TRUTH_BACKENDS = ("ground_truth", "ground_truth_unscaled")
SpinUntil = Callable[[Callable[[], bool], float], bool]
EXIT_FAILURE = 1
EXIT_NO_MODEL = 3


# The model's 504 px input costs minutes per window on a CPU; 252 px is about 4x fewer tokens.
CPU_IMG_SIZE = 252


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="Hub id[@revision], directory or weights file (default: "
                        "$DVLT_CHECKPOINT, else nvidia/dvlt, downloaded on first use)")
    parser.add_argument("--backend", default="torch",
                        help="inference backend: torch (default), another registered one, "
                        "ground_truth (exact scene geometry, no weights) or "
                        "ground_truth_unscaled (the scene at a random scale per window, with "
                        "noise: an up-to-scale network)")
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
    parser.add_argument("--scale-source", default="none", choices=SCALE_SOURCES,
                        help="metric scale from: none, rig (camera baselines on /tf_static), "
                        "odometry (odom -> base_link on /tf), depth (needs --depth) or auto")
    parser.add_argument("--anchor", default="chain", choices=ANCHORS,
                        help="chain: the node's own world; tf: the world is odom, each window "
                        "aligned to the cameras' TF poses")
    parser.add_argument("--depth", action="store_true",
                        help="also publish each camera's depth (16UC1 mm, registered)")
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
    if (args.img_size == 0 and args.backend not in GROUND_TRUTH_BACKENDS
            and backend.device.type == "cpu"):
        args.img_size = CPU_IMG_SIZE
        print(f"running on the CPU: network input {CPU_IMG_SIZE} px on the longer side to keep "
              "cycles short (--img-size 504 for the model's full size, --device cuda on a GPU)",
              flush=True)
    if not args.use_network:
        from dvlt_ros.testing.ros_network import isolate_ros_network

        isolate_ros_network()
    return _run_node(args, rig, times, backend, checkpoint)


def _make_backend(args, rig, times, checkpoint):
    if args.backend in GROUND_TRUTH_BACKENDS:
        from dvlt_core.backends.ground_truth import GroundTruthBackend
        from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend

        kind = GroundTruthBackend if args.backend == "ground_truth" else GroundTruthUnscaledBackend
        return kind.for_rig(rig, times, img_size=args.img_size or 504)
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
        "checkpoint": "" if args.backend in GROUND_TRUTH_BACKENDS else checkpoint,
        "scale_source": args.scale_source,
        "anchor": args.anchor,
    }
    if args.anchor == "tf":
        from dvlt_ros.bags.sample import ODOM_FRAME

        params["world_frame"] = ODOM_FRAME
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
        source = SyntheticRigPublisher(rig, context, depth=args.depth)
        executor.add_node(node)
        executor.add_node(source.node)
        listens = (node.tf is not None, node.depth_inputs is not None)
        if not _spin_until(executor, lambda: source.connected(*listens), 30):
            print("dvlt-ros demo: the node did not subscribe to the camera topics",
                  file=sys.stderr)
            return EXIT_FAILURE
        print(_TABLE_HEADER, flush=True)
        for t in times:
            stamp = source.publish(t, node, lambda c, s: _spin_until(executor, c, s))
            done = _spin_until(executor, lambda s=stamp: recorder.has(s), 3600)
            if not done:
                print(f"dvlt-ros demo: no cycle for the snapshot at t={t:.2f} s; see the node's "
                      "log above", file=sys.stderr)
                return EXIT_FAILURE
            print(_row(recorder.reports[-1]), flush=True)
        recorder.write(args.out, node, backend, params, args, rig)
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
    """Publishes what a robot carrying a synthetic rig publishes (see the module docstring):
    images and CameraInfo (reliable), ``/tf_static`` once at start, ``/tf`` per snapshot
    and, with ``depth``, each camera's registered depth and its CameraInfo."""

    def __init__(self, rig, context, depth: bool = False) -> None:
        import rclpy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from dvlt_ros.bags.sample import BASE_FRAME, DEPTH_IMAGE, DEPTH_INFO
        from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped
        from dvlt_ros.node_support.qos import input_qos
        from dvlt_ros.node_support.tf_listener import TF_QOS, TF_STATIC_QOS

        self.rig = rig
        self.node = rclpy.create_node("dvlt_demo_rig", context=context)
        qos = input_qos("reliable")
        pub = self.node.create_publisher
        self.images = {name: pub(Image, f"{name}/image_raw", qos) for name in rig.names}
        self.infos = {name: pub(CameraInfo, f"{name}/camera_info", qos) for name in rig.names}
        self.depths = {name: (pub(Image, f"{name}/{DEPTH_IMAGE}", qos),
                              pub(CameraInfo, f"{name}/{DEPTH_INFO}", qos))
                       for name in rig.names} if depth else {}
        self.depth_published = 0
        self.tf = pub(TFMessage, "/tf", TF_QOS)
        self.tf_static = pub(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.tf_static.publish(tf_message([
            transform_stamped(rig.camera(name).base_from_camera, BASE_FRAME,
                              rig.camera(name).optical_frame, stamp_from_ns(BASE_STAMP_NS))
            for name in rig.names]))

    def connected(self, tf: bool = False, depth: bool = False) -> bool:
        """Whether the node subscribes to every image (and to /tf, the depth images)."""
        pubs = [*self.images.values(), *([self.tf] if tf else []),
                *([d for d, _ in self.depths.values()] if depth else [])]
        return all(p.get_subscription_count() > 0 for p in pubs)

    def publish_robot(self, t: float) -> int:
        """Publish ``odom -> base_link`` and (with depth) every camera's depth at rig time
        ``t``; return the stamp (ns)."""
        from std_msgs.msg import Header

        from dvlt_ros.bags.sample import BASE_FRAME, ODOM_FRAME, depth_millimetres
        from dvlt_ros.conversions.camera_info import camera_info_from_intrinsics
        from dvlt_ros.conversions.image import array_to_image
        from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped

        stamp = BASE_STAMP_NS + round(t * 1e9)
        self.tf.publish(tf_message([transform_stamped(
            self.rig.world_from_base(t), ODOM_FRAME, BASE_FRAME, stamp_from_ns(stamp))]))
        for name, (image, info) in self.depths.items():
            cam = self.rig.camera(name)
            header = Header(stamp=stamp_from_ns(stamp), frame_id=cam.optical_frame)
            info.publish(camera_info_from_intrinsics(cam.k, cam.width, cam.height, header))
            depth = depth_millimetres(self.rig.render(name, t).depth)
            image.publish(array_to_image(depth, "16UC1", header))
            self.depth_published += 1
        return stamp

    def publish_images(self, t: float) -> int:
        """Publish every camera's CameraInfo and image at rig time ``t``; return the stamp."""
        from std_msgs.msg import Header

        from dvlt_ros.conversions.camera_info import camera_info_from_intrinsics
        from dvlt_ros.conversions.image import array_to_image
        from dvlt_ros.conversions.tf import stamp_from_ns

        stamp = BASE_STAMP_NS + round(t * 1e9)
        for view in self.rig.snapshot(t):
            cam = self.rig.camera(view.camera)
            header = Header(stamp=stamp_from_ns(stamp), frame_id=cam.optical_frame)
            self.infos[view.camera].publish(
                camera_info_from_intrinsics(cam.k, cam.width, cam.height, header))
            self.images[view.camera].publish(array_to_image(view.image, "rgb8", header))
        return stamp

    def publish(self, t: float, node, spin_until: SpinUntil, timeout: float = 5.0) -> int:
        """Publish the snapshot at rig time ``t`` to ``node``: TF and depth first, the images
        once the node holds them (or after ``timeout`` s), so that no cycle starts before
        the robot's data of its snapshot arrived (as a robot's data is usually older than
        the next cycle). Returns the stamp."""
        stamp = self.publish_robot(t)
        frame = self.rig.camera(self.rig.names[0]).optical_frame
        spin_until(lambda: _node_holds(node, stamp, frame, self.depth_published), timeout)
        return self.publish_images(t)


def _node_holds(node, stamp_ns: int, frame: str, depth_images: int) -> bool:
    """Whether ``node`` has ``odom -> frame`` (through /tf_static and /tf) at ``stamp_ns``
    (when it listens to TF) and ``depth_images`` depth images (when it listens to depth)."""
    from dvlt_core.geometry import TransformError

    if node.depth_inputs is not None and node.depth_inputs.received < depth_images:
        return False
    if node.tf is None:
        return True
    try:
        node.tf.lookup(node.params["odom_frame"], frame, stamp_ns)
    except TransformError:
        return False
    return True


def true_reference_poses(rig, params: dict, stamps_ns) -> np.ndarray:
    """The reference camera's true optical-frame poses (metres) at ``stamps_ns`` in the
    node's world: ``odom`` (the scene's frame) under ``anchor: tf``; else the world the node
    starts from its first reference pose (``world_axes``), at the first stamp."""
    from dvlt_ros.pipeline.configs import world_config

    camera = rig.names[0]
    poses = np.stack([rig.camera_pose(camera, (s - BASE_STAMP_NS) * 1e-9) for s in stamps_ns])
    if params["anchor"] == "tf":
        return poses
    initial = world_config(params).initial_world_from_reference
    return initial @ np.linalg.inv(poses[0]) @ poses


_COLUMNS = ("cycle", "K", "S", "points", "sync", "prep", "infer", "pose", "world", "prod",
            "publish", "total", "m/unit")
_TABLE_HEADER = (
    " ".join(f"{c:>7}" for c in _COLUMNS) + "\n" + " ".join(["-------"] * len(_COLUMNS))
    + "   (times in ms)"
)


def _row(report) -> str:
    values = (
        report.cycle, report.num_steps, report.num_views, report.points, report.sync_wait_ms,
        report.preprocess_ms, report.inference_ms, report.pose_fit_ms, report.world_ms,
        report.products_ms, report.publish_ms, report.total_ms, report.metres_per_unit,
    )
    cells = [f"{v:7d}" if isinstance(v, int) else f"{v:7.1f}" for v in values[:-1]]
    return " ".join([*cells, f"{values[-1]:7.4g}"])


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

    def write(self, out: Path, node, backend, params: dict, args, rig) -> None:
        from dvlt_core.io.writers import write_tum

        out.mkdir(parents=True, exist_ok=True)
        session = node.session
        fused_points = sum(session.fused.write(out / f"points{epoch_suffix(epoch)}.ply", epoch)
                           for epoch in session.fused.epochs or [0])
        session.trajectories.write_path_tum(out / "trajectory.tum")
        stamps = [s for s, _ in session.trajectories.path]
        if stamps:
            write_tum(out / "ground_truth.tum", [s * 1e-9 for s in stamps],
                      true_reference_poses(rig, {**node.params, **params}, stamps))
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
            "grounding": self.reports[-1].grounding,
            "parameters": params,
            "cycles": records,
            "fused_points": fused_points,
        }
        (out / "run.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        unit = "metres" if self.units == "m" else "arbitrary units (network scale)"
        totals = [r.total_ms for r in self.reports]
        print(f"\n{len(self.reports)} cycles, median cycle {np.median(totals):.0f} ms; "
              f"fused cloud {fused_points} points in {unit}, in frame "
              f"'{node.params['world_frame']}'.")
        if self.reports[-1].grounding:
            print(f"scale: {self.reports[-1].grounding} (anchor {self.reports[-1].anchor})")
        print(f"wrote {out / 'points.ply'}, {out / 'trajectory.tum'}, "
              f"{out / 'ground_truth.tum'}, {out / 'cycles.csv'}, {out / 'run.json'}")
        if model is not None:
            print(f"model: {model.identity}\nlicence: {model.licence}")
        if args.backend not in GROUND_TRUTH_BACKENDS and not (args.checkpoint
                                                   or os.environ.get("DVLT_CHECKPOINT")):
            print("(override the weights with --checkpoint or DVLT_CHECKPOINT)")
