"""``dvlt-bag-to-dataset``: turn a recorded rosbag2 (sqlite3 or mcap) into a training scene.

See :mod:`dvlt_ros.bags.to_dataset` for what is read and how frames are paired and posed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dvlt_ros.bags.to_dataset import BagConversion, convert_bag, extrinsic_matrix, parse_camera


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dvlt-bag-to-dataset", description=__doc__.split("\n")[0])
    parser.add_argument("bag", help="rosbag2 folder (sqlite3 or mcap)")
    parser.add_argument("out", help="dataset root; the scene is written to OUT/<name>")
    parser.add_argument("--camera", action="append", required=True, metavar="IMAGE,INFO,DEPTH",
                        help="image, camera_info and registered depth topics (repeatable)")
    parser.add_argument("--pose-source", choices=["tf", "odometry"], default="tf")
    parser.add_argument("--fixed-frame", default="map", help="world frame for TF poses")
    parser.add_argument("--odometry-topic", help="nav_msgs/Odometry topic (pose-source odometry)")
    parser.add_argument("--extrinsic", action="append", default=[],
                        metavar="FRAME=x,y,z,qx,qy,qz,qw",
                        help="base→optical-frame transform when /tf_static lacks it")
    parser.add_argument("--tolerance", type=float, default=0.02, help="seconds (default 0.02)")
    parser.add_argument("--max-gap", type=float, default=0.5,
                        help="longest interpolated pose gap, seconds")
    parser.add_argument("--min-interval", type=float, default=0.0,
                        help="seconds between kept frames per camera")
    parser.add_argument("--max-depth", type=float, help="metres; deeper readings are invalid")
    parser.add_argument("--allow-distortion", action="store_true")
    parser.add_argument("--name", help="scene name (default: the bag name)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cameras = [parse_camera(spec) for spec in args.camera]
        extrinsics = {}
        for item in args.extrinsic:
            frame, sep, values = item.partition("=")
            if not sep:
                raise ValueError(f"--extrinsic {item!r}: give FRAME=x,y,z,qx,qy,qz,qw")
            extrinsics[frame] = extrinsic_matrix(values.split(","))
        conversion = BagConversion(
            cameras, args.pose_source, args.fixed_frame, args.odometry_topic, extrinsics,
            args.tolerance, args.max_gap, args.min_interval, args.max_depth,
            args.allow_distortion,
        )
        report = convert_bag(args.bag, args.out, conversion, args.name, progress=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dvlt-bag-to-dataset: {exc}", file=sys.stderr)
        return 2
    state = ("PARTIAL (the bag is damaged or cut: see the warnings above), "
             if report.warnings else "")
    print(f"{state}wrote {report.written} frames to {report.scene}; skipped: "
          f"{dict(report.skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
