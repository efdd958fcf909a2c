"""The package builds with colcon in a workspace on top of the pip ROS 2 environment,
and its install space has what `ros2 run` / `ros2 launch` look for."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def install_space(tmp_path_factory) -> Path:
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent))
    if colcon is None:
        pytest.fail("colcon is not installed: run .ci/setup.sh --extras dev")
    ws = tmp_path_factory.mktemp("colcon_ws")
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = sys.prefix
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        [colcon, "build", "--base-paths", str(REPO), "--build-base", str(ws / "build"),
         "--install-base", str(ws / "install"), "--event-handlers", "console_direct-"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ws / "install" / "dvlt_ros"


def test_ament_index_and_share(install_space):
    assert (install_space / "share/ament_index/resource_index/packages/dvlt_ros").is_file()
    share = install_space / "share/dvlt_ros"
    assert (share / "package.xml").is_file()
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/*.rviz"):
        assert sorted(share.glob(pattern)) or not sorted(REPO.glob(pattern)), pattern
        assert [p.name for p in share.glob(pattern)] == [p.name for p in REPO.glob(pattern)]


def test_console_scripts_where_ros2_run_finds_them(install_space):
    """`ros2 run dvlt_ros X` runs lib/dvlt_ros/X: every console script must be there."""
    (entry_points,) = install_space.glob("lib/python3*/site-packages/dvlt_ros-*/entry_points.txt")
    parser = configparser.ConfigParser()
    parser.read(entry_points)
    scripts = list(parser["console_scripts"])
    assert scripts, "setup.py declares no console scripts"
    for name in scripts:
        assert os.access(install_space / "lib/dvlt_ros" / name, os.X_OK), name


def test_share_directory_lookup(install_space):
    env = dict(os.environ, AMENT_PREFIX_PATH=f"{install_space}{os.pathsep}{sys.prefix}")
    out = subprocess.run(
        [sys.executable, "-c", "from ament_index_python.packages import "
         "get_package_share_directory as g; print(g('dvlt_ros'))"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert Path(out.stdout.strip()) == install_space / "share/dvlt_ros"
