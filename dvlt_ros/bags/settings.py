"""The reconstruction node's parameters outside a node: a ROS parameter file plus
``name:=value`` overrides, checked against the node's parameter specs. The pipeline
configurations are then built by :mod:`dvlt_ros.node_support.configs`, as in the node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from rclpy.parameter import Parameter

from dvlt_ros.bags.issues import BagError
from dvlt_ros.node_support.parameters import SPECS_BY_NAME, check_parameters, defaults

NODE_NAME = "reconstruct_node"


def file_parameters(path: str | Path, node_name: str = NODE_NAME) -> dict[str, object]:
    """The ``ros__parameters`` of ``node_name`` (and of ``/**``) in a ROS parameter file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BagError(f"cannot read parameter file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BagError(f"{path} is not a ROS parameter file (expected '<node>: ros__parameters:')")
    values: dict[str, object] = {}
    for key in ("/**", "**", node_name, "/" + node_name):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            values.update(section["ros__parameters"])
    if not values:
        raise BagError(f"{path} has no 'ros__parameters' for {node_name} (sections: "
                       f"{', '.join(map(str, data))})")
    return values


def parse_override(item: str) -> tuple[str, object]:
    """``"num_steps:=4"`` -> ``("num_steps", 4)`` (the value is read as YAML, like
    ``--ros-args -p``)."""
    if ":=" not in item:
        raise BagError(f"parameter {item!r} must have the form name:=value (e.g. num_steps:=4)")
    name, text = item.split(":=", 1)
    return name.strip(), yaml.safe_load(text)


def load_parameters(
    params_file: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, object] = (),
    node_name: str = NODE_NAME,
) -> dict[str, object]:
    """The node's defaults, updated by the file and the overrides, each value checked."""
    values = dict(defaults())
    if params_file is not None:
        values.update(file_parameters(params_file, node_name))
    if isinstance(overrides, Mapping):
        values.update(overrides)
    else:
        values.update(parse_override(item) for item in overrides)
    problems = []
    for name, value in values.items():
        spec = SPECS_BY_NAME.get(name)
        if spec is None:
            if name != "use_sim_time":
                problems.append(f"unknown parameter {name!r}")
            continue
        if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(
                value, bool):
            value = values[name] = float(value)
        if type(value) is not type(spec.default):
            problems.append(f"{name} must be a {type(spec.default).__name__}, got {value!r}")
    if not problems:
        verdict = check_parameters(
            Parameter(name, value=value) for name, value in values.items()
            if name in SPECS_BY_NAME
        )
        if not verdict.successful:
            problems.append(verdict.reason)
    if problems:
        raise BagError("invalid parameters: " + "; ".join(problems))
    return values
