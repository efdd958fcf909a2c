"""``dvlt-ros sample-bag OUT``: write a small multi-camera rosbag2 rendered from the
synthetic scene with what a robot publishes (images, camera_info, the rig on /tf_static,
odometry ``odom -> base_link`` on /tf, optionally depth) and ground truth on
/ground_truth/tf, for trying ``dvlt-ros replay`` / ``dvlt-ros process`` and for tests.
See docs/replay.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="new rosbag2 directory to create")
    parser.add_argument("--frames", type=int, default=20, help="rig snapshots (default 20)")
    parser.add_argument("--rate", type=float, default=5.0, help="snapshots per second (5)")
    parser.add_argument("--cameras", type=int, default=2, choices=(1, 2, 3, 4),
                        help="number of cameras (default 2)")
    parser.add_argument("--width", type=int, default=160, help="image width (160)")
    parser.add_argument("--height", type=int, default=120, help="image height (120)")
    parser.add_argument("--seed", type=int, default=0, help="scene texture seed")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--no-camera-info", action="store_true",
                        help="leave out the <cam>/camera_info topics")
    parser.add_argument("--no-odometry", action="store_true",
                        help="leave out /tf (odom -> base_link)")
    parser.add_argument("--depth", action="store_true",
                        help="add <cam>/depth/image_raw (16UC1 mm, registered) and "
                             "<cam>/depth/camera_info")
    parser.add_argument("--path", choices=("arc", "loop"), default="arc",
                        help="arc: part of the rig's circle (default); loop: the whole circle "
                             "over the bag, ending one step short of the start")
    parser.add_argument("--laps", type=float, default=1.0,
                        help="--path loop: drive the circle this many times over the bag "
                             "(default 1; more laps give loops all along the path)")


def run(args: argparse.Namespace) -> int:
    """Write the bag; returns the exit status."""
    from dvlt_ros.bags.sample import SampleBagConfig, camera_names, write_sample_bag

    if args.out.exists():
        print(f"[error] {args.out} exists already; choose a new path", file=sys.stderr)
        return 1
    try:
        config = SampleBagConfig(frames=args.frames, rate_hz=args.rate,
                                 num_cameras=args.cameras, width=args.width,
                                 height=args.height, seed=args.seed,
                                 camera_info=not args.no_camera_info,
                                 odometry=not args.no_odometry, depth=args.depth,
                                 path=args.path, laps=args.laps)
    except ValueError as exc:
        print(f"[error] {exc}", file=sys.stderr)
        return 1

    def progress(done: int, total: int) -> None:
        print(f"\rrendered {done}/{total} snapshots", end="", file=sys.stderr, flush=True)

    write_sample_bag(args.out, config, args.storage, progress)
    print(file=sys.stderr)
    cameras = " ".join(camera_names(config))
    extras = "".join([", /tf (odom -> base_link)" if config.odometry else "",
                      ", depth" if config.depth else ""])
    print(f"wrote {args.out} ({args.storage}): {config.frames} snapshots of {cameras} at "
          f"{config.rate_hz:g} Hz along a{'n' if config.path == 'arc' else ''} {config.path}, "
          f"/tf_static{extras}; ground truth on /ground_truth/tf", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dvlt-ros sample-bag", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
