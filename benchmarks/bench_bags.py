"""Offline bag processing (``dvlt-ros process``): throughput with the model time excluded,
time to first output, and memory over a long bag.

    python benchmarks/bench_bags.py [--frames 120] [--cameras 2] [--size 160x120]

A sample bag is rendered from the synthetic scene and processed with the ground-truth
backend (whose "inference" is exact ray casting, excluded like a model's time). Printed
tables:

1. throughput: images/s of reading + decoding the bag alone (the reference, measured in
   the same run), and of the whole offline pipeline with the backend's time subtracted,
   with their ratio;
2. latency: time to the first written output, and the mean milliseconds per window by
   stage;
3. memory: resident set size and fused-cloud size sampled after every window, at a few
   points along the bag, and the RSS trend over the second half, when the rig drives its
   circle a second time and the fused cloud stops growing (flat = bounded memory).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from dvlt_ros.bags.decode import FrameDecoder
from dvlt_ros.bags.issues import IssueLog
from dvlt_ros.bags.processor import BagProcessor, ProcessOptions
from dvlt_ros.bags.sample import (
    SampleBagConfig,
    camera_names,
    ground_truth_backend,
    write_sample_bag,
)
from dvlt_ros.bags.source import BagSource
from dvlt_ros.pipeline.settings import load_parameters

IMG_SIZE = 112


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def read_only(bag_path: Path, cameras: list[str]) -> tuple[int, float]:
    """Images read and decoded per second, without any reconstruction."""
    decoder = FrameDecoder(use_camera_info=False)
    topics = {f"/{c}/image_raw": c for c in cameras}
    start = time.perf_counter()
    count = 0
    with BagSource(bag_path) as bag:
        for message in bag.messages(list(topics)):
            frame, _ = decoder.image(topics[message.topic], message.raw, compressed=False)
            count += frame is not None
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150, help="rig snapshots in the bag")
    parser.add_argument("--rate", type=float, default=2.5,
                        help="snapshots per second of the bag (2.5: the rig drives its "
                             "circle once per 79 snapshots, so later windows see no new scene)")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--size", default="160x120", help="image size WxH")
    parser.add_argument("--num-steps", type=int, default=2)
    parser.add_argument("--fuse-voxel", type=float, default=0.02,
                        help="voxel of the fused cloud (world units, 0: keep all points)")
    parser.add_argument("--fuse-max-points", type=int, default=4_000_000,
                        help="fused cloud size above which its voxel doubles")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    config = SampleBagConfig(frames=args.frames, rate_hz=args.rate, num_cameras=args.cameras,
                             width=width, height=height)

    with tempfile.TemporaryDirectory() as tmp:
        bag_path = write_sample_bag(Path(tmp) / "bag", config)
        cameras = camera_names(config)
        images, read_s = read_only(bag_path, cameras)

        issues = IssueLog()
        bag = BagSource(bag_path, issues)
        backend = ground_truth_backend(bag, IMG_SIZE)
        params = load_parameters(None, {"cameras": cameras, "img_size": IMG_SIZE,
                                        "num_steps": args.num_steps, "window_timesteps": 2,
                                        "max_views": 2 * args.cameras,
                                        "keyframe_min_spacing": 0.0})
        samples: list[tuple[int, float, int]] = []

        def progress(done: int, total: int, windows: int) -> None:
            if windows and (not samples or samples[-1][0] != windows):
                samples.append((windows, rss_mib(), len(processor.fused)))

        options = ProcessOptions(fuse_voxel=args.fuse_voxel,
                                 fuse_max_points=args.fuse_max_points)
        processor = BagProcessor(bag, backend, params, Path(tmp) / "out", options,
                                 issues=issues, progress=progress)
        summary = processor.run()
        bag.close()

    timings = summary["timings_ms"]
    windows = summary["windows"]
    wall_s = summary["wall_s"]
    model_s = timings["inference_ms"]["sum"] / 1e3
    pipeline_rate = summary["frames"]["read"] / (wall_s - model_s)
    read_rate = images / read_s
    print(f"\nbag: {args.frames} snapshots x {args.cameras} cameras, {width}x{height}, "
          f"img_size {IMG_SIZE}, K={args.num_steps}, windows of {2 * args.cameras} views; "
          f"{windows} windows, fused voxel {args.fuse_voxel:g} m\n")
    print("| measurement | images/s | ratio to read + decode |")
    print("|---|---|---|")
    print(f"| read + decode only (reference) | {read_rate:.1f} | 1.00 |")
    print(f"| offline pipeline, model time excluded | {pipeline_rate:.1f} | "
          f"{pipeline_rate / read_rate:.2g} |")
    print(f"| offline pipeline, including the (ground-truth) backend | "
          f"{summary['frames']['read'] / wall_s:.1f} | "
          f"{summary['frames']['read'] / wall_s / read_rate:.2g} |")

    print("\n| latency | ms |")
    print("|---|---|")
    print(f"| time to first output | {summary['time_to_first_output_s'] * 1e3:.0f} |")
    for stage in ("preprocess_ms", "inference_ms", "pose_fit_ms", "world_ms", "products_ms",
                  "write_ms", "total_ms"):
        print(f"| per window: {stage[:-3]} (mean) | {timings[stage]['mean']:.1f} |")

    print("\n| window | RSS MiB | fused cloud points |")
    print("|---|---|---|")
    marks = sorted({1, *(max(1, round(windows * f)) for f in (0.25, 0.5, 0.75, 1.0))})
    by_window = {w: (rss, points) for w, rss, points in samples}
    for mark in marks:
        rss, points = by_window.get(mark, (float("nan"), 0))
        print(f"| {mark} | {rss:.1f} | {points} |")
    half = [(w, rss) for w, rss, _ in samples if w > windows // 2]
    if len(half) > 2:
        slope = statistics.linear_regression(*zip(*half, strict=True)).slope * 100
        print(f"\nRSS over the second half (the rig's second lap): {slope:+.2f} MiB per 100 "
              f"windows (min {min(r for _, r in half):.1f}, max {max(r for _, r in half):.1f} "
              "MiB)")


if __name__ == "__main__":
    main()
