"""``dvlt-ros``: entry point that dispatches to the subcommand modules of this package.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> exit status``;
the first paragraph of its docstring is the subcommand's help. Modules are imported only
when their subcommand runs (``--help`` lists them all), so one command's imports never
slow another down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module implementing it, one-line help)
SUBCOMMANDS = {
    "demo": ("dvlt_ros.cli.demo", "run reconstruct_node on a bundled multi-camera sequence"),
    "replay": ("dvlt_ros.cli.replay", "play a rosbag2 into live topics with /clock"),
    "process": ("dvlt_ros.cli.process", "reconstruct a recorded rosbag2 offline"),
    "sample-bag": ("dvlt_ros.cli.sample_bag",
                   "write a small synthetic multi-camera rosbag2 for trying replay/process"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all are listed)."""
    parser = argparse.ArgumentParser(
        prog="dvlt-ros",
        description="DVLT live multi-camera reconstruction for ROS 2: demo, bag replay and "
        "offline processing.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == command:
            module = importlib.import_module(module_name)
            sub.description = module.__doc__ or help_text
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in SUBCOMMANDS else None).parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
