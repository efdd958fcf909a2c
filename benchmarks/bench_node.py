"""Latency of reconstruct_node per stage, and its overhead next to the model, for 2-8 cameras.

    python benchmarks/bench_node.py                           # 2,4,6,8 cameras at 640x480
    python benchmarks/bench_node.py --cameras 2,4 --model released --device cuda

The node runs in-process over real DDS (loopback, an isolated domain) on a synthetic rig
of N cameras, with the ground-truth backend, so every stage but the model is the node's
real code: sync wait, preprocess, pose fit, world placement, products, publish. The model's
own time for the same S views and K is measured separately with the real network
(``--model small``: ViT-S, ``released``: the released ViT-B architecture; deterministic
weights, which time like trained ones). The table gives milliseconds (median over
``--cycles``) and the node overhead (cycle minus backend) as a fraction of model time;
``worker`` is the part of it on the worker thread (the overhead minus publishing, which
runs on the publishing thread while the worker goes on with the next cycle): what delays
the next model call.

Cloud publishing is compared with a bare rclpy publish of the same bytes in the same run:
``points_to_cloud`` (from the points, colours and confidences) + ``publish``, against
building a PointCloud2 around the finished cloud bytes (a ``bytes`` object made before
timing) + ``publish``: the least any rclpy node pays to send that cloud. The target is a
ratio of at most 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dvlt_core.model.config import DEFAULT_NUM_STEPS

REPO = Path(__file__).resolve().parents[1]
STAGES = ("sync_wait", "preprocess", "pose_fit", "world", "products", "publish")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cameras", default="2,4,6,8", help="comma-separated camera counts")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--num-steps", type=int, default=DEFAULT_NUM_STEPS, help="K")
    parser.add_argument("--img-size", type=int, default=504, help="network input, longer side")
    parser.add_argument("--cycles", type=int, default=4, help="measured cycles per N")
    parser.add_argument("--model", default="small", choices=("small", "released", "none"),
                        help="architecture timed for the model column (none: skip)")
    parser.add_argument("--model-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="device of the model timing")
    parser.add_argument("--cloud-repeats", type=int, default=30)
    parser.add_argument("--cloud-only", type=int, default=None, metavar="POINTS",
                        help="only compare cloud publishing, for a cloud of POINTS points")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args()


def ring_rig(num_cameras: int, width: int, height: int):
    """N cameras on the demo base, turned evenly around it (the default rig has <= 4)."""
    from dvlt_core.synthetic import (
        CircularTrajectory,
        PinholeCamera,
        SyntheticRig,
        default_scene,
        mount,
    )

    cameras = []
    for i in range(num_cameras):
        yaw = 2 * math.pi * i / num_cameras
        f = 0.6 * width
        k = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
        pose = mount(0.1 * math.cos(yaw), 0.1 * math.sin(yaw), 0.0, yaw, math.radians(8.0))
        cameras.append(PinholeCamera(f"cam{i}", k, width, height, pose))
    return SyntheticRig(default_scene(0), cameras, CircularTrajectory())


def node_stages(num_cameras: int, args) -> dict[str, float]:
    """Median per-stage milliseconds of the node with the ground-truth backend."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.logging import LoggingSeverity
    from rclpy.parameter import Parameter

    from dvlt_core.backends.ground_truth import GroundTruthBackend
    from dvlt_ros.cli.demo import SyntheticRigPublisher
    from dvlt_ros.nodes.reconstruct_node import ReconstructNode

    rig = ring_rig(num_cameras, args.width, args.height)
    times = [0.2 * i for i in range(args.cycles + 1)]
    backend = GroundTruthBackend.for_rig(rig, times, img_size=args.img_size)
    context = rclpy.Context()
    rclpy.init(context=context)
    params = {"cameras": rig.names, "input_qos": "reliable", "rate": 50.0,
              "camera_timeout": 1e4, "window_timesteps": 1, "max_views": num_cameras,
              "num_steps": args.num_steps, "img_size": args.img_size}
    node = ReconstructNode(backend=backend, context=context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    node.get_logger().set_level(LoggingSeverity.ERROR)
    reports = []
    node.add_cycle_listener(lambda report, result: reports.append(report))
    source = SyntheticRigPublisher(rig, context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(source.node)
    try:
        _spin_until(executor, source.connected, 30)
        for t in times:
            count = len(reports)
            source.publish(t, node, lambda cond, wait: _spin_until(executor, cond, wait))
            if not _spin_until(executor, lambda c=count: len(reports) > c, 300):
                raise RuntimeError(f"no cycle for {num_cameras} cameras at t={t}")
    finally:
        node.destroy_node()
        source.node.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
    measured = reports[1:]  # the first cycle warms caches up
    out = {s: statistics.median(getattr(r, f"{s}_ms") for r in measured) for s in STAGES}
    out["overhead"] = statistics.median(r.node_overhead_ms for r in measured)
    out["worker"] = statistics.median(r.node_overhead_ms - r.publish_ms for r in measured)
    out["points"] = measured[-1].points
    return out


def _spin_until(executor, condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)
    return bool(condition())


def model_ms(num_views: int, args, model) -> dict[str, float]:
    """Median backend milliseconds of the real network on S views at the node's size."""
    from dvlt_core.backends import TorchBackend
    from dvlt_core.io.images import preprocess

    backend = TorchBackend(model, device=args.device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
              for _ in range(num_views)]
    batch = preprocess(images, img_size=args.img_size).images
    runs = [backend.infer(batch, num_steps=args.num_steps).timings
            for _ in range(args.model_repeats)]
    return {"total": statistics.median(t.total_ms for t in runs),
            "step": statistics.median(sum(t.step_ms) / len(t.step_ms) for t in runs)}


def build_model(kind: str):
    from dvlt_core.io.checkpoint import released_config
    from dvlt_core.model import DVLTConfig, DVLTModel
    from dvlt_core.testing.det_weights import load_deterministic_weights

    if kind == "released":
        config = released_config()
    else:
        reference = Path(os.environ.get("DVLT_REFERENCE_DIR", REPO.parent / "shared" /
                                        "reference"))
        with np.load(reference / "case_small_public.npz") as case:
            config = DVLTConfig.from_kwargs(json.loads(str(case["config_json"])))
    model = DVLTModel(**config.to_dict())
    load_deterministic_weights(model, 0)
    return model.eval()


def cloud_publish(num_points: int, repeats: int) -> dict[str, float]:
    """Milliseconds of points_to_cloud + publish vs publish of prepared bytes."""
    import rclpy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from dvlt_ros.conversions.pointcloud import points_to_cloud
    from dvlt_ros.node_support.qos import OUTPUT_QOS

    rng = np.random.default_rng(0)
    points = rng.normal(size=(num_points, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (num_points, 3), dtype=np.uint8)
    confidence = rng.uniform(1, 50, num_points).astype(np.float32)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_cloud", context=context)
    received = [0]

    def on_cloud(msg) -> None:  # count only: keeping messages would grow memory
        received[0] += 1

    node.create_subscription(PointCloud2, "bench_cloud", on_cloud, OUTPUT_QOS)
    pub = node.create_publisher(PointCloud2, "bench_cloud", OUTPUT_QOS)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    _spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
    header = Header(frame_id="dvlt_world")
    template = points_to_cloud(points, colors, confidence, header)
    prepared = bytes(template.data)
    ours, bare = [], []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            pub.publish(points_to_cloud(points, colors, confidence, header))
            ours.append(time.perf_counter() - start)
            executor.spin_once(timeout_sec=0.5)
            start = time.perf_counter()
            msg = PointCloud2(header=header, height=1, width=num_points, fields=template.fields,
                              is_bigendian=False, point_step=template.point_step,
                              row_step=template.row_step, is_dense=True)
            msg.data = prepared
            pub.publish(msg)
            bare.append(time.perf_counter() - start)
            executor.spin_once(timeout_sec=0.5)
    finally:
        node.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
    return {"ours": statistics.median(ours) * 1e3, "bare": statistics.median(bare) * 1e3,
            "ours_min": min(ours) * 1e3, "bare_min": min(bare) * 1e3,
            "mib": len(prepared) / 2**20}


def report_cloud(points: int, repeats: int) -> dict[str, float]:
    cloud = cloud_publish(points, repeats)
    cloud["ratio"] = cloud["ours"] / cloud["bare"]
    cloud["ratio_min"] = cloud["ours_min"] / cloud["bare_min"]
    print(f"\ncloud publish, {points} points ({cloud['mib']:.1f} MiB), {repeats} interleaved "
          "runs, median (min) ms:")
    print(f"  points_to_cloud + publish          {cloud['ours']:6.2f} ({cloud['ours_min']:.2f})")
    print(f"  bare rclpy publish of those bytes  {cloud['bare']:6.2f} ({cloud['bare_min']:.2f})")
    print(f"  ratio {cloud['ratio']:.2f} (of minima {cloud['ratio_min']:.2f}); target <= 2")
    return cloud


def main() -> int:
    args = parse_args()
    from dvlt_ros.testing.ros_network import isolate_ros_network

    isolate_ros_network()
    if args.cloud_only:
        report_cloud(args.cloud_only, args.cloud_repeats)
        return 0
    counts = [int(c) for c in args.cameras.split(",")]
    # The cloud comparison runs first, in a fresh process state: after the model runs the
    # heap holds gigabytes and fresh multi-MiB buffers page-fault, which skews both sides.
    from dvlt_ros.node_support.parameters import SPECS_BY_NAME

    stride, cap = SPECS_BY_NAME["cloud_stride"].default, SPECS_BY_NAME["max_points"].default
    per_camera = -(-args.width // stride) * -(-args.height // stride)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cloud = report_cloud(min(cap, max(counts) * per_camera), args.cloud_repeats)
    cloud_text = buffer.getvalue().rstrip()
    print(f"# bench_node: {args.width}x{args.height}, img_size {args.img_size}, K={args.num_steps}"
          f", model {args.model} on {args.device}; {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    model = build_model(args.model) if args.model != "none" else None
    rows = []
    for n in counts:
        stages = node_stages(n, args)
        timing = model_ms(n, args, model) if model is not None else None
        rows.append({"cameras": n, "views": n, **stages,
                     "model_ms": timing["total"] if timing else None,
                     "step_ms": timing["step"] if timing else None})
        print(f"  measured {n} cameras", file=sys.stderr, flush=True)

    head = ["N", "S", *STAGES, "overhead", "worker", "model", "overhead/model",
            "worker/model"]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        model_col = f"{r['model_ms']:.0f}" if r["model_ms"] else "-"
        fracs = [f"{r[k] / r['model_ms']:.4f}" if r["model_ms"] else "-"
                 for k in ("overhead", "worker")]
        cells = [str(r["cameras"]), str(r["views"]), *(f"{r[s]:.1f}" for s in STAGES),
                 f"{r['overhead']:.1f}", f"{r['worker']:.1f}", model_col, *fracs]
        print("| " + " | ".join(cells) + " |")
    print("\nmilliseconds, median over cycles; overhead = cycle minus backend call "
          "(preprocess + pose fit + world + products + publish), worker = overhead minus "
          "publish (publishing overlaps the next cycle); sync_wait is the age of "
          "the newest frame when the cycle took it and is not in the overhead.")

    print(cloud_text)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "cloud": cloud}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
