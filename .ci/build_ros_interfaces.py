"""Build ROS 2 interface packages (tf2_msgs) into a pip-only ROS 2 prefix (the venv).

Called by `.ci/setup.sh` when no system ROS 2 is sourced. The pip `ros-<distro>-*` wheels
make the venv a ROS prefix, but their CMake exports name the wheel builder's Python and
numpy include directories; those are rewritten to this interpreter's before configuring.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILDER_INCLUDE = re.compile(r'INTERFACE_INCLUDE_DIRECTORIES "([^"]*)"')


def _is_foreign(path: str) -> bool:
    return not Path(path).exists()


def fix_python_include_dirs(prefix: Path) -> int:
    """Point the rosidl Python exports at this interpreter's include dirs; return files fixed."""
    import numpy

    local = [sysconfig.get_paths()["include"], numpy.get_include()]
    fixed = 0
    for export in prefix.glob("share/*/cmake/export_*__rosidl_generator_pyExport.cmake"):
        text = export.read_text()

        def repl(match: re.Match[str]) -> str:
            dirs = match.group(1).split(";")
            if not any(_is_foreign(d) for d in dirs):
                return match.group(0)
            return f'INTERFACE_INCLUDE_DIRECTORIES "{";".join(local)}"'

        new = BUILDER_INCLUDE.sub(repl, text)
        if new != text:
            export.write_text(new)
            fixed += 1
    return fixed


def build_package(source: Path, prefix: Path, jobs: int) -> None:
    """Configure, build and install one ament_cmake interface package into `prefix`."""
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p
    )
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join(
        p for p in (str(prefix), env.get("CMAKE_PREFIX_PATH", "")) if p
    )
    with tempfile.TemporaryDirectory(prefix=f"build-{source.name}-") as build:
        configure = [
            "cmake", "-S", str(source), "-B", build, "-G", "Ninja" if shutil.which("ninja")
            else "Unix Makefiles",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBUILD_TESTING=OFF",
        ]
        for cmd in (
            configure,
            ["cmake", "--build", build, "--parallel", str(jobs)],
            ["cmake", "--install", build],
        ):
            result = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
                raise SystemExit(
                    f"building {source.name} failed at `{' '.join(cmd[:3])}`: see the output "
                    "above; a C/C++ compiler and cmake are required (apt-get install "
                    "build-essential cmake)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "packages", nargs="*", default=["tf2_msgs"],
        help="interface packages under .ci/ros_interfaces to build",
    )
    args = parser.parse_args()
    fixed = fix_python_include_dirs(args.prefix)
    if fixed:
        print(f"setup: rewrote the Python include dirs of {fixed} rosidl CMake exports")
    for name in args.packages:
        print(f"setup: building {name} into {args.prefix} ...", flush=True)
        build_package(HERE / "ros_interfaces" / name, args.prefix, args.jobs)


if __name__ == "__main__":
    main()
