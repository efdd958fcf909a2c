"""What ``launch/reconstruct.launch.py`` decides in plain Python (no launch import): the
camera list of its arguments, whether RViz can start, and the RViz configuration written
for the cameras being launched (one depth image display per camera).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from dvlt_core.atomic import write_atomic
from dvlt_ros.pipeline.settings import NODE_NAME, camera_label, defaults

DEPTH_DISPLAY_CLASS = "rviz_default_plugins/Image"


def camera_list(text: str) -> list[str]:
    """'[a, b]', 'a,b' or 'a b' -> ['a', 'b']."""
    words = text.strip().strip("[]").replace(",", " ").split()
    return [w.strip("'\"") for w in words if w.strip("'\"")]


def rviz_available() -> bool:
    """Whether ``rviz2`` is installed as a ROS package, where launch_ros looks for its
    executable (the pip ROS 2 route has no RViz)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        prefix = Path(get_package_prefix("rviz2"))
    except (PackageNotFoundError, ValueError, OSError):  # OSError: no AMENT_PREFIX_PATH
        return False
    return (prefix / "lib" / "rviz2" / "rviz2").is_file()


def launched_parameters(params_file: str | os.PathLike[str] | None,
                        cameras_argument: str = "") -> dict[str, object]:
    """The node's defaults, updated by the parameters file and the ``cameras`` argument:
    what the launched node will show (cameras, world frame)."""
    values = dict(defaults())
    if params_file:
        from dvlt_ros.pipeline.settings import file_parameters

        values.update(file_parameters(params_file))
    if cameras_argument.strip():
        values["cameras"] = camera_list(cameras_argument)
    return values


def rviz_config(template: Mapping, cameras: Sequence[str], world_frame: str,
                node_name: str = NODE_NAME) -> dict:
    """``template`` (a parsed .rviz file) with one depth display per camera in place of
    its depth display(s), and ``world_frame`` as the fixed frame."""
    config = copy.deepcopy(dict(template))
    manager = config["Visualization Manager"]
    displays = manager["Displays"]
    depth = [i for i, d in enumerate(displays) if _is_depth_display(d)]
    if not depth:
        raise ValueError("the RViz template has no depth image display to copy")
    model = displays[depth[0]]
    per_camera = []
    for camera in cameras:
        label = camera_label(camera)
        display = copy.deepcopy(model)
        display["Name"] = f"Depth {label}"
        display["Topic"]["Value"] = f"/{node_name}/{label}/depth"
        per_camera.append(display)
    kept = [d for i, d in enumerate(displays) if i not in depth]
    manager["Displays"] = kept[:depth[0]] + per_camera + kept[depth[0]:]
    manager["Global Options"]["Fixed Frame"] = world_frame
    return config


def _is_depth_display(display: Mapping) -> bool:
    topic = display.get("Topic")
    return (display.get("Class") == DEPTH_DISPLAY_CLASS and isinstance(topic, Mapping)
            and str(topic.get("Value", "")).endswith("/depth"))


def rviz_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dvlt_ros/rviz`` (default ``~/.cache/dvlt_ros/rviz``)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dvlt_ros" / "rviz"


def write_rviz_config(template_path: str | os.PathLike[str], cameras: Sequence[str],
                      world_frame: str, directory: Path | None = None) -> Path:
    """Write :func:`rviz_config` of the template file for these cameras and return its
    path (named by its content, so a launch with the same cameras reuses the file)."""
    template = yaml.safe_load(Path(template_path).read_text())
    text = yaml.safe_dump(rviz_config(template, cameras, world_frame), sort_keys=False)
    folder = directory or rviz_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"reconstruct-{hashlib.sha256(text.encode()).hexdigest()[:12]}.rviz"
    if not path.is_file():
        write_atomic(path, lambda p: p.write_text(text))
    return path
