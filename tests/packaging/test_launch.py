"""What ``ros2 launch dvlt_ros reconstruct.launch.py`` decides: whether RViz can start,
the RViz configuration for the launched cameras, and (where launch_ros is installed, e.g.
``colcon test`` on a ROS machine) the launch itself without rviz2.

The pure parts live in :mod:`dvlt_ros.node_support.launching` and run here without
launch; the launch run is skipped where launch_ros cannot be imported (the pip route).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dvlt_ros.node_support.launching import (
    launched_parameters,
    rviz_available,
    rviz_config,
    write_rviz_config,
)
from dvlt_ros.node_support.parameters import SPECS_BY_NAME
from dvlt_ros.testing.processes import process_ended

REPO = Path(__file__).resolve().parents[2]
RVIZ = REPO / "config" / "reconstruct.rviz"
LAUNCH = REPO / "launch" / "reconstruct.launch.py"


def _depth_topics(config: dict) -> list[str]:
    return [d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"]
            if d["Class"].endswith("/Image")]


def test_rviz_config_has_one_depth_display_per_camera():
    template = yaml.safe_load(RVIZ.read_text())
    config = rviz_config(template, ["cam_front", "/rig/left/"], "map")
    assert _depth_topics(config) == ["/reconstruct_node/cam_front/depth",
                                     "/reconstruct_node/rig/left/depth"]
    names = [d["Name"] for d in config["Visualization Manager"]["Displays"]]
    assert len(set(names)) == len(names)  # RViz keys display state by name
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    # The other displays are the template's, in its order; the template is untouched.
    others = [d["Class"] for d in config["Visualization Manager"]["Displays"]
              if not d["Class"].endswith("/Image")]
    assert others == [d["Class"] for d in template["Visualization Manager"]["Displays"]
                      if not d["Class"].endswith("/Image")]
    assert _depth_topics(template) == ["/reconstruct_node/cam0/depth"]


def test_rviz_config_file_for_the_launched_parameters(tmp_path):
    params = tmp_path / "rig.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "cameras": ["left", "right", "rear"], "world_frame": "odom"}}}))
    values = launched_parameters(params)
    assert values["cameras"] == ["left", "right", "rear"] and values["world_frame"] == "odom"
    # The cameras argument wins over the file; nothing given: the node's defaults.
    assert launched_parameters(params, "[a, b]")["cameras"] == ["a", "b"]
    assert launched_parameters(None)["cameras"] == SPECS_BY_NAME["cameras"].default

    path = write_rviz_config(RVIZ, values["cameras"], values["world_frame"], tmp_path / "cache")
    written = yaml.safe_load(path.read_text())
    assert _depth_topics(written) == [f"/reconstruct_node/{c}/depth" for c in values["cameras"]]
    # The same cameras give the same file (an RViz "Save Config" into it is kept).
    assert write_rviz_config(RVIZ, values["cameras"], "odom", tmp_path / "cache") == path
    assert write_rviz_config(RVIZ, ["left"], "odom", tmp_path / "cache") != path


def _fake_rviz2_prefix(root: Path, argv_file: Path | None = None) -> Path:
    """An install prefix holding a package named rviz2 whose executable records its
    arguments and exits (a stand-in at the process boundary: only its command line is
    looked at)."""
    (root / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (root / "share/ament_index/resource_index/packages/rviz2").write_text("")
    (root / "share/rviz2").mkdir(parents=True)
    (root / "share/rviz2/package.xml").write_text("<package><name>rviz2</name></package>")
    exe = root / "lib/rviz2/rviz2"
    exe.parent.mkdir(parents=True)
    record = f'printf "%s\\n" "$@" > {argv_file}\n' if argv_file else ""
    exe.write_text(f"#!/bin/sh\n{record}")
    exe.chmod(0o755)
    return root


def test_rviz_available_looks_in_the_ament_index(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert not rviz_available()
    prefix = _fake_rviz2_prefix(tmp_path / "ros")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path}{os.pathsep}{prefix}")
    assert rviz_available()


_RUN_LAUNCH = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService()
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]),
    launch_arguments=[tuple(a.split(":=", 1)) for a in sys.argv[2:]])]))
sys.exit(service.run())
"""


class _Launch:
    """``ros2 launch dvlt_ros reconstruct.launch.py ARGS`` through launch's Python API
    (needs launch_ros and dvlt_ros in the ament index, e.g. under `colcon test`)."""

    def __init__(self, tmp_path: Path, args: list[str], ament_prefix: Path | None = None):
        pytest.importorskip("launch_ros")
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        try:
            get_package_prefix("dvlt_ros")
        except PackageNotFoundError:
            pytest.skip("dvlt_ros is not in the ament index (colcon build, then source the "
                        "install space)")
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
        if ament_prefix is not None:
            env["AMENT_PREFIX_PATH"] = f"{ament_prefix}{os.pathsep}{env['AMENT_PREFIX_PATH']}"
        # No weights needed: the node reports the failed load and keeps running.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_LAUNCH, str(LAUNCH), "device:=cpu",
             f"checkpoint:={tmp_path / 'no_checkpoint'}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.node_pid: int | None = None

    def read_until(self, text: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            found = re.search(r"reconstruct_node-\d+\]: process started with pid \[(\d+)\]",
                              line)
            self.node_pid = int(found.group(1)) if found else self.node_pid
            if text in line:
                break
        return "".join(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.node_pid is not None and not process_ended(self.node_pid):
            os.kill(self.node_pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_launch_with_rviz_but_no_rviz2_runs_the_node_which_ends_with_launch(tmp_path):
    """rviz:=true without rviz2: a warning, the node runs; launch killed: the node ends."""
    if rviz_available():
        pytest.skip("rviz2 is installed here: the case without it cannot be run")
    launch = _Launch(tmp_path, ["rviz:=true"])
    try:
        output = launch.read_until("reconstructing")  # the node runs, watching its parent
        assert launch.proc.poll() is None and launch.node_pid is not None, output
        assert "rviz2 is not installed here" in output
        launch.proc.kill()  # no clean launch shutdown: the node must end all the same
        launch.proc.wait()
        deadline = time.monotonic() + 15
        while not process_ended(launch.node_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_ended(launch.node_pid), "reconstruct_node outlived its launch"
    finally:
        launch.close()


def test_launch_gives_rviz_a_config_for_the_launched_cameras(tmp_path):
    argv_file = tmp_path / "rviz2.argv"
    prefix = _fake_rviz2_prefix(tmp_path / "ros", argv_file)
    launch = _Launch(tmp_path, ["cameras:=[front, rear]"], ament_prefix=prefix)
    try:
        output = launch.read_until("reconstructing")
        deadline = time.monotonic() + 30
        while not argv_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert argv_file.is_file(), output
    finally:
        launch.close()
    argv = argv_file.read_text().split()
    config = Path(argv[argv.index("-d") + 1])
    assert config.parent == tmp_path / "cache" / "dvlt_ros" / "rviz"
    assert _depth_topics(yaml.safe_load(config.read_text())) == [
        "/reconstruct_node/front/depth", "/reconstruct_node/rear/depth"]
