#!/usr/bin/env bash
# One-command setup of dvlt_ros on a fresh machine (see README "Install").
#
# Creates .venv, installs PyTorch (CPU build by default), dvlt_ros/dvlt_core with the
# requested extras (declared once, in setup.py), and ROS 2:
#   - no ROS 2 sourced: the pip ROS 2 Kilted set, plus tf2_msgs built from its
#     definitions with the pip rosidl/ament tools, all inside .venv;
#   - a ROS 2 install sourced (Humble, Jazzy, Kilted): the venv sees the system's rclpy
#     and messages (--system-site-packages) and no ROS wheel is installed.
# Idempotent: a re-run with nothing to do returns in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DVLT_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${DVLT_TORCH_VERSION:-2.13.0}
DA3_VERSION=0.1.1  # the depth-anything-3 release backend: da3 is tested with
TORCH=cpu
TORCH_INDEX=${DVLT_TORCH_INDEX:-}
EXTRAS=""
CHECK_ONLY=false
CHROMIUM=false

usage() {
  cat <<EOF
usage: .ci/setup.sh [--extras LIST] [--torch cpu|cuda|keep] [--torch-index URL]

  --extras LIST      comma-separated optional groups from setup.py: dev, bags, export,
                     tensorrt, train (the ROS group is chosen automatically)
  --torch cpu        (default) the CPU build of torch $TORCH_VERSION
  --torch cuda       the CUDA build: torch from --torch-index (default: PyTorch's cu128 index)
  --torch keep       keep the torch already in the venv or, with a system ROS, the system's
  --torch-index URL  the package index torch comes from (env DVLT_TORCH_INDEX)
  --check            only report whether the venv is up to date (exit 0) or not (exit 1)
  --chromium         also install Debian's chromium (apt-get, as root) if neither chromium nor
                     chromium-browser is on the PATH: the browser demo's test drives it (CI
                     passes this)
Environment: PYTHON (interpreter, default python3), DVLT_VENV (default .venv),
DVLT_TORCH_VERSION (default $TORCH_VERSION).
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --extras) EXTRAS=$2; shift 2 ;;
    --torch) TORCH=$2; shift 2 ;;
    --torch-index) TORCH_INDEX=$2; shift 2 ;;
    --check) CHECK_ONLY=true; shift ;;
    --chromium) CHROMIUM=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "setup: error: $*" >&2; exit 1; }
log() { echo "setup: $*"; }

case "$TORCH" in cpu|cuda|keep) ;; *) die "--torch must be cpu, cuda or keep, not '$TORCH'" ;; esac

# --- Python ------------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH: install Python 3.10-3.12 \
(apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11"
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$PYVER" in
  3.10|3.11|3.12) ;;
  *) die "Python $PYVER is not supported (need 3.10, 3.11 or 3.12, the versions the ROS 2 \
wheels and PyTorch are built for): run with PYTHON=python3.11 (or 3.10/3.12)" ;;
esac

# --- ROS 2: system or pip ------------------------------------------------------------------
if [ -n "${ROS_DISTRO:-}" ]; then
  ROS_MODE=system
  "$PYTHON" -c 'import rclpy' 2>/dev/null || die "ROS_DISTRO=$ROS_DISTRO is set but \
'$PYTHON' cannot import rclpy: source /opt/ros/$ROS_DISTRO/setup.bash in this shell (or \
unset ROS_DISTRO to use the pip ROS 2 Kilted set instead)"
  case "$ROS_DISTRO" in humble|jazzy|kilted|rolling) ;;
    *) log "warning: ROS 2 '$ROS_DISTRO' is not one of the tested distros (humble, jazzy, kilted)" ;;
  esac
else
  ROS_MODE=pip
  [ "$(uname -m)" = x86_64 ] || die "the pip ROS 2 wheels exist only for x86-64, this machine \
is $(uname -m) (Jetson: aarch64): install ROS 2 (Humble, Jazzy or Kilted) from its packages, \
source /opt/ros/<distro>/setup.bash and run .ci/setup.sh again"
  case ":${PYTHONPATH:-}:${AMENT_PREFIX_PATH:-}:" in
    *opt/ros/*) die "a ROS 2 install is partly sourced (PYTHONPATH or AMENT_PREFIX_PATH name \
/opt/ros, but ROS_DISTRO is unset): open a clean shell, or source its setup.bash fully" ;;
  esac
fi

# --- Chromium (the browser demo's test) ------------------------------------------------------
# Debian names it chromium, Ubuntu chromium-browser (the test looks for either).
if [ "$CHROMIUM" = true ] && [ "$CHECK_ONLY" = false ] && ! command -v chromium >/dev/null \
    && ! command -v chromium-browser >/dev/null; then
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || die "--chromium installs Debian's \
chromium with apt-get as root: run as root on Debian/Ubuntu, or install chromium yourself and \
leave out --chromium"
  log "installing chromium (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    >/dev/null || die "apt-get could not install chromium: see the messages above"
fi

# --- the virtual environment ---------------------------------------------------------------
STAMP="$VENV/.dvlt_setup"
if [ -d "$VENV" ]; then
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null || die "$VENV \
is half-installed or was made on another machine: remove it (rm -rf $VENV) and run \
.ci/setup.sh again"
  VENV_PYVER=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$VENV_PYVER" = "$PYVER" ] || die "$VENV uses Python $VENV_PYVER but '$PYTHON' is \
$PYVER: remove it (rm -rf $VENV) or run with PYTHON=python$VENV_PYVER"
  SYSTEM_SITE=$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg")
  if [ "$ROS_MODE" = system ] && [ "$SYSTEM_SITE" != true ]; then
    if "$VENV/bin/python" -m pip show -q ros-kilted-rclpy >/dev/null 2>&1; then
      die "ROS 2 $ROS_DISTRO is sourced, but $VENV holds the pip ROS 2 Kilted set: mixing \
the two breaks rclpy. Either open a shell without sourcing ROS to use the venv as it is, or \
remove it (rm -rf $VENV) and run .ci/setup.sh again with ROS sourced"
    fi
    die "$VENV was made without access to the system ROS 2: remove it (rm -rf $VENV) and \
run .ci/setup.sh again with ROS sourced"
  fi
  if [ "$ROS_MODE" = pip ] && [ "$SYSTEM_SITE" = true ] && [ ! -f "$STAMP" ]; then
    die "$VENV was made for a system ROS 2, but no ROS is sourced: source \
/opt/ros/<distro>/setup.bash first, or remove it (rm -rf $VENV) for a pip-only setup"
  fi
else
  log "creating $VENV (Python $PYVER, ROS 2 from ${ROS_MODE})"
  if [ "$ROS_MODE" = system ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV" || die "could not create $VENV: install \
the venv module (apt-get install python3-venv)"
  else
    "$PYTHON" -m venv "$VENV" || die "could not create $VENV: install the venv module \
(apt-get install python3-venv)"
  fi
fi
VPY="$VENV/bin/python"

# --- fast path: nothing changed since the last complete run --------------------------------
KEY=$(cat "$ROOT/setup.py" "$ROOT/.ci/setup.sh" "$ROOT/.ci/build_ros_interfaces.py" \
  "$ROOT"/.ci/ros_interfaces/*/*/* "$ROOT"/.ci/ros_interfaces/*/CMakeLists.txt \
  | sha256sum | cut -c1-16)
KEY="$KEY $PYVER $ROS_MODE ${ROS_DISTRO:-} torch=$TORCH extras=$EXTRAS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] \
  && "$VPY" -c 'import dvlt_core, torch, rclpy, tf2_msgs.msg' 2>/dev/null; then
  log "up to date ($VENV)"
  exit 0
fi
if [ "$CHECK_ONLY" = true ]; then
  log "$VENV is not up to date with these options: run .ci/setup.sh without --check"
  exit 1
fi
rm -f "$STAMP"

PIP=("$VPY" -m pip install --disable-pip-version-check -q)

# --- PyTorch -------------------------------------------------------------------------------
install_torch() {
  if [ "$TORCH" = keep ] && "$VPY" -c 'import torch' 2>/dev/null; then
    log "keeping torch $("$VPY" -c 'import torch; print(torch.__version__)')"
    return
  fi
  if [ "$TORCH" = cuda ]; then
    local index=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
    log "installing torch $TORCH_VERSION (CUDA build) from $index"
    "${PIP[@]}" "torch==$TORCH_VERSION" --index-url "$index" || die "could not install the CUDA \
build of torch from $index: pass --torch-index with the index for your CUDA version"
    return
  fi
  if "$VPY" -c "import torch, sys; v = torch.__version__; \
sys.exit(not (v.startswith('$TORCH_VERSION') and (not torch.version.cuda)))" 2>/dev/null; then
    return
  fi
  log "installing torch $TORCH_VERSION (CPU build)"
  # A CPU wheel already on this machine (pip's find-links) wins; else PyTorch's CPU index.
  "${PIP[@]}" --no-index "torch==$TORCH_VERSION" 2>/dev/null && return
  local index=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
  "${PIP[@]}" "torch==$TORCH_VERSION" --index-url "$index" || die "could not install torch $TORCH_VERSION: check network access to $index, or pass \
--torch-index URL (or --torch keep with torch preinstalled)"
}
install_torch

# --- dvlt_ros, its dependencies and (pip mode) ROS 2 ------------------------------------------
SELECTED=bags${EXTRAS:+,$EXTRAS}
[ "$ROS_MODE" = pip ] && SELECTED=ros,$SELECTED
log "installing dvlt_ros[$SELECTED] (editable)"
"${PIP[@]}" --config-settings editable_mode=compat -e "$ROOT[$SELECTED]" || die "pip could not install dvlt_ros[$SELECTED]: see the \
messages above"
# Depth Anything 3's own requirements pin numpy<2 (and pull xformers, open3d, pycolmap); its
# model code needs only what the da3 extra installed, so the package itself comes without them.
case ",$SELECTED," in
  *,da3,*|*,test,*)
    log "installing depth-anything-3 $DA3_VERSION (without its own requirements)"
    "${PIP[@]}" --no-deps "depth-anything-3==$DA3_VERSION" || die "pip could not install \
depth-anything-3 $DA3_VERSION: check network access to PyPI, or leave out the da3 extra" ;;
esac

if [ "$ROS_MODE" = pip ]; then
  command -v cmake >/dev/null || "${PIP[@]}" cmake
  command -v c++ >/dev/null || die "building tf2_msgs needs a C++ compiler: apt-get install \
build-essential"
  IFACE_HASH=$(cat "$ROOT"/.ci/ros_interfaces/tf2_msgs/*/* "$ROOT"/.ci/build_ros_interfaces.py \
    | sha256sum | cut -c1-16)
  if ! "$VPY" -c 'import tf2_msgs.msg' 2>/dev/null \
    || [ "$(cat "$VENV/share/tf2_msgs/.dvlt_source" 2>/dev/null)" != "$IFACE_HASH" ]; then
    "$VPY" "$ROOT/.ci/build_ros_interfaces.py" --prefix "$VENV" tf2_msgs
    echo "$IFACE_HASH" > "$VENV/share/tf2_msgs/.dvlt_source"
  fi
fi

# --- verify --------------------------------------------------------------------------------
"$VPY" - <<'EOF' || die "the environment is incomplete (see above): remove .venv and run again"
import importlib
for name in ("torch", "numpy", "safetensors", "dvlt_core", "rclpy", "sensor_msgs.msg",
             "tf2_msgs.msg", "diagnostic_msgs.msg", "rosbags"):
    importlib.import_module(name)
import torch
print(f"setup: torch {torch.__version__} (cuda: {torch.cuda.is_available()})")
EOF
echo "$KEY" > "$STAMP"
log "done: activate with 'source ${VENV#"$PWD"/}/bin/activate'"
