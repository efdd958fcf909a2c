"""``dvlt-ros replay BAG``: play a rosbag2 (sqlite3 or mcap) into live topics with /clock,
without rosbag2 installed (it reads the bag with ``rosbags``).

Start the node with ``use_sim_time:=true``; ``--lossless`` waits for a node started with
``lossless:=true`` to finish each image before playing on, so no window is dropped
however slow the model is. ROS discovery is your usual configuration (ROS_DOMAIN_ID,
ROS_AUTOMATIC_DISCOVERY_RANGE). See docs/replay.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory, .mcap or .db3 file")
    parser.add_argument("-r", "--rate", type=float, default=1.0,
                        help="playback speed factor (default 1; 0: as fast as possible)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="play only these topics (names after --remap)")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="publish a bag topic under another name (repeatable)")
    parser.add_argument("-l", "--loop", action="store_true", help="repeat until Ctrl-C")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="SECONDS",
                        help="skip this many seconds from the start of the bag")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--clock-rate", type=float, default=40.0, metavar="HZ",
                        help="/clock updates per second between messages (default 40)")
    parser.add_argument("--lossless", action="store_true",
                        help="wait for the node's acknowledgement after every image")
    parser.add_argument("--ack-topic", default="/reconstruct_node/consumed",
                        help="acknowledgement topic of the node (default "
                             "/reconstruct_node/consumed)")
    parser.add_argument("--ack-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up when an image is not acknowledged within this time")
    parser.add_argument("--wait-timeout", type=float, default=20.0, metavar="SECONDS",
                        help="--lossless: how long to wait for the node to appear")


def run(args: argparse.Namespace) -> int:
    """Play the bag; returns the exit status."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from dvlt_ros.bags.issues import BagError, IssueLog
    from dvlt_ros.bags.player import BagPlayer, PlayOptions
    from dvlt_ros.bags.source import BagSource, parse_remaps

    def say(level: str, text: str) -> None:
        print(f"[{level}] {text}", file=sys.stderr)

    issues = IssueLog(lambda issue: say(issue.level, f"{issue.code}: "
                                        + (f"[{issue.topic}] " if issue.topic else "")
                                        + issue.message))
    try:
        bag = BagSource(args.bag, issues, parse_remaps(args.remap))
        options = PlayOptions(
            rate=args.rate, topics=tuple(args.topics) if args.topics else None,
            start_offset_s=args.start_offset, loop=args.loop, clock=not args.no_clock,
            clock_rate=args.clock_rate, lossless=args.lossless,
            ack_topic="/" + args.ack_topic.lstrip("/"), ack_timeout_s=args.ack_timeout,
            discovery_timeout_s=args.wait_timeout,
        )
    except (BagError, ValueError) as exc:
        say("error", str(exc))
        return EXIT_BAD_INPUT

    rclpy.init()
    node = rclpy.create_node("dvlt_replay")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        try:
            player = BagPlayer(node, bag, options, lambda t: executor.spin_once(timeout_sec=t),
                               log=say)
        except BagError as exc:  # nothing playable, unknown --topics
            say("error", str(exc))
            return EXIT_BAD_INPUT
        signal.signal(signal.SIGINT, lambda *_: player.stop())
        span = bag.time_range_ns()
        duration = 0.0 if span is None else (span[1] - span[0]) / 1e9
        say("info", f"playing {args.bag}: {len(player.topics)} topics, {duration:.1f} s "
            f"at rate {args.rate:g}" + (" (lossless)" if args.lossless else ""))
        report = player.play()
    except BagError as exc:
        say("error", str(exc))
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        node.destroy_node()
        executor.shutdown()
        bag.close()
        if rclpy.ok():
            rclpy.shutdown()
    say("info", f"{'stopped' if report.stopped else 'done'}: {report.published} messages, "
        f"{report.loops} pass(es) in {report.wall_s:.1f} s"
        + (f"; {report.acknowledged} images acknowledged, {report.waited_s:.1f} s waiting for "
           "the node" if args.lossless else "")
        + ("; the bag is damaged or cut off: messages were skipped (see the warnings above)"
           if not bag.complete else ""))
    return EXIT_INTERRUPTED if report.stopped else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dvlt-ros replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
