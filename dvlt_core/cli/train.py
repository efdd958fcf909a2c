"""``dvlt-train``: train or fine-tune DVLT from a YAML recipe with ``key=value`` overrides.

Examples::

    dvlt-train --config training/dvlt-large.yaml data.sources[0].root=/data/scannetpp
    accelerate launch --num_processes 8 -m dvlt_core.cli.train --config training/X.yaml
    dvlt-train --config training/X.yaml --resume latest
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from dvlt_core.training.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    read_yaml_tree,
)

_INDEXED = re.compile(r"^(?P<key>[\w.]+)\[(?P<index>\d+)\]\.(?P<rest>[\w.]+)=(?P<value>.*)$")


def _apply_indexed(tree: dict, override: str) -> bool:
    """``data.sources[0].root=/x``: set a key inside a list element (returns False if not such)."""
    match = _INDEXED.match(override)
    if not match:
        return False
    node = tree
    for part in match["key"].split("."):
        node = node.setdefault(part, {})
    index = int(match["index"])
    if not isinstance(node, list) or index >= len(node):
        raise ConfigError(f"override {override!r}: {match['key']} has no element {index}")
    node[index] = apply_overrides(node[index], [f"{match['rest']}={match['value']}"])
    return True


def build_config(path: str, overrides: Sequence[str]) -> TrainConfig:
    """Read ``path`` and apply the overrides (``a.b=v`` and ``a.list[i].b=v`` forms)."""
    tree = read_yaml_tree(path)
    plain = [o for o in overrides if not _apply_indexed(tree, o)]
    return config_from_dict(apply_overrides(tree, plain))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dvlt-train",
        description="Train DVLT (multi-GPU / multi-node through `accelerate launch`).",
    )
    parser.add_argument("--config", required=True, help="recipe YAML (training/*.yaml)")
    parser.add_argument("--output-dir", help="run folder (default trainer.output_dir/experiment)")
    parser.add_argument("--resume", help="'latest', a checkpoint-<step> name or a path")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. trainer.max_train_steps=1000")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = build_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"dvlt-train: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    from dvlt_core.training.data import scenes_from_sources
    from dvlt_core.training.trainer import Trainer

    try:  # data errors (a missing bag topic, a bad scene folder) are the user's to fix
        scenes = scenes_from_sources(config.data.sources)
    except (ValueError, OSError, ModuleNotFoundError) as exc:
        print(f"dvlt-train: data: {exc}", file=sys.stderr)
        return 2
    from dvlt_core.io.checkpoint import CheckpointError

    try:  # a bad init checkpoint (empty, missing, wrong config.json) is the user's to fix
        result = Trainer(config, args.output_dir, scenes=scenes).fit(resume=args.resume)
    except CheckpointError as exc:
        print(f"dvlt-train: {exc}", file=sys.stderr)
        return 2
    if result.final_model is not None:
        print(f"trained to step {result.global_step}; final model: {result.final_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
