"""What the package declares: console script names, package.xml dependencies against what
the code imports, and a test suite that collects (and skips cleanly) without the optional
extras, as `colcon test --packages-select dvlt_ros` runs it on a ROS machine."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE = ("dvlt_ros", "dvlt_core", "launch")
# Started as executables by the launch file, not imported.
LAUNCHED = {"rviz2"}
# The optional extras the tests must do without: their modules are hidden in a subprocess.
EXTRAS = ("onnx", "onnxruntime", "ml_dtypes", "tensorrt", "tensorboard", "h5py", "trimesh", "rerun")


def _entry_points() -> dict[str, list[str]]:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "setup")
    return ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))


def _console_scripts() -> list[str]:
    return [item.split("=")[0].strip() for item in _entry_points()["console_scripts"]]


def test_entry_points_name_functions_of_the_package():
    """Every console script and plugin (``dvlt.training_sources``) names a module of this
    repository that defines the function (checked without importing it)."""
    for group, items in _entry_points().items():
        for item in items:
            module, function = item.split("=")[1].strip().split(":")
            path = REPO / (module.replace(".", "/") + ".py")
            assert path.is_file(), f"{group}: {item}: no module {path}"
            names = {n.name for n in ast.parse(path.read_text()).body
                     if isinstance(n, ast.FunctionDef)}
            assert function in names, f"{group}: {item}: {module} has no {function}()"
    assert _entry_points()["dvlt.training_sources"] == [
        "rosbag = dvlt_ros.bags.training_source:rosbag_scenes"]


def test_console_scripts_have_namespaced_names():
    """Scripts land on PATH (pip) and in lib/dvlt_ros (`ros2 run dvlt_ros <name>`): no
    generic names such as `export` that shadow other tools."""
    scripts = _console_scripts()
    assert "dvlt-export" in scripts and "reconstruct_node" in scripts
    for name in scripts:
        assert name.startswith("dvlt-") or name == "reconstruct_node", name


def _imported_top_level_modules() -> set[str]:
    names = set()
    for folder in CODE:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def _depends(kind: str) -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for e in root.iter(kind)}


def _is_ros_package(module: str) -> bool:
    return module.endswith(("_msgs", "_srvs", "_interfaces")) or module in {
        "rclpy", "launch", "launch_ros", "ament_index_python", "cv_bridge", "tf2_ros",
        "sensor_msgs_py"}


def test_package_xml_run_dependencies_match_the_imports():
    imported = _imported_top_level_modules()
    ros_run = {d for d in _depends("exec_depend") if not d.startswith("python3-")}
    unused = ros_run - imported - LAUNCHED
    assert not unused, f"package.xml declares ROS packages the code never uses: {unused}"
    undeclared = {m for m in imported if _is_ros_package(m)} - ros_run
    assert not undeclared, f"package.xml does not declare imported ROS packages: {undeclared}"
    assert "rviz2" in (REPO / "launch" / "reconstruct.launch.py").read_text()


def test_package_xml_declares_the_test_dependencies():
    assert {"python3-pytest", "python3-colcon-common-extensions"} <= _depends("test_depend")


_WITHOUT_EXTRAS = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if not installed: import fails, find_spec gives None
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-rs", *sys.argv[2:]]))
"""


def _pytest_without_extras(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-c", _WITHOUT_EXTRAS, ",".join(EXTRAS), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_suite_collects_without_the_optional_extras():
    result = _pytest_without_extras("--collect-only", "tests")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "error" not in result.stdout.splitlines()[-1], result.stdout[-3000:]


def test_export_tests_skip_with_the_reason_without_the_export_extra():
    result = _pytest_without_extras("tests/core/export")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "needs onnx: pip install -e '.[export]'" in result.stdout
