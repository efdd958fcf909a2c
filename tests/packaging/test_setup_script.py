"""`.ci/setup.sh` fails loudly, with what to do next, on the bad setups users hit."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / ".ci" / "setup.sh"


def run_setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_DISTRO", "DVLT_"))}
    clean.update(env)
    return subprocess.run(
        ["bash", str(SETUP)], env=clean, capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )


def fake_python(tmp_path: Path, version: str) -> Path:
    exe = tmp_path / "python-fake"
    exe.write_text(f'#!/bin/sh\necho "{version}"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_wrong_python_version(tmp_path):
    result = run_setup(tmp_path, PYTHON=str(fake_python(tmp_path, "3.8")),
                       DVLT_VENV=str(tmp_path / "venv"))
    assert result.returncode == 1
    assert "Python 3.8 is not supported" in result.stderr
    assert "PYTHON=python3.11" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_half_installed_venv(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nowhere\n")
    result = run_setup(tmp_path, PYTHON=sys.executable, DVLT_VENV=str(venv))
    assert result.returncode == 1
    assert "half-installed" in result.stderr
    assert f"rm -rf {venv}" in result.stderr


def test_sourced_ros_mixed_with_pip_ros_set(tmp_path):
    """A sourced ROS 2 of another distro over a venv holding the pip Kilted set."""
    pytest.importorskip("rclpy")
    venv = Path(sys.prefix)
    result = run_setup(tmp_path, PYTHON=sys.executable, DVLT_VENV=str(venv), ROS_DISTRO="humble")
    assert result.returncode == 1
    assert "holds the pip ROS 2 Kilted set" in result.stderr
    assert "without sourcing ROS" in result.stderr


def test_ros_partly_sourced(tmp_path):
    result = run_setup(tmp_path, PYTHON=sys.executable, DVLT_VENV=str(tmp_path / "venv"),
                       PYTHONPATH="/opt/ros/jazzy/lib/python3.12/site-packages")
    assert result.returncode == 1
    assert "partly sourced" in result.stderr


def test_rerun_with_nothing_to_do_is_fast():
    """The venv this suite runs in was made by setup.sh; a re-run only checks it."""
    if not (Path(sys.prefix) / ".dvlt_setup").is_file():
        pytest.skip("this interpreter's environment was not made by .ci/setup.sh")
    stamp = (Path(sys.prefix) / ".dvlt_setup").read_text().split()
    extras = next(s for s in stamp if s.startswith("extras=")).removeprefix("extras=")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROS_DISTRO")}
    env["DVLT_VENV"] = sys.prefix
    command = ["bash", str(SETUP), "--extras", extras]
    if subprocess.run([*command, "--check"], env=env, capture_output=True).returncode != 0:
        pytest.skip("setup inputs changed since this venv was made: run .ci/setup.sh")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout  # the fast path: imports checked, nothing installed


def test_chromium_browser_counts_as_installed(tmp_path):
    """--chromium installs nothing when the browser is there as ``chromium-browser``
    (Ubuntu's name): no apt-get. A half-installed venv stops the script right after."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "apt-get-called"
    for name, body in (("chromium-browser", "exit 0"), ("apt-get", f"touch {called}; exit 1")):
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\n{body}\n")
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    # Every other command of the PATH, without a real chromium or apt-get.
    for directory in os.environ["PATH"].split(os.pathsep):
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else ():
            link = bin_dir / tool.name
            if tool.name not in ("chromium", "apt-get") and not link.exists():
                link.symlink_to(tool)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nowhere\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_DISTRO", "DVLT_"))}
    clean.update(PYTHON=sys.executable, DVLT_VENV=str(venv), PATH=str(bin_dir))
    result = subprocess.run(["bash", str(SETUP), "--chromium"], env=clean,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "half-installed" in result.stderr
    assert "installing chromium" not in result.stderr and not called.exists()
