"""Shared pytest fixtures and rules: reference data, ROS network isolation, GPU markers.

ROS isolation is enforced for the whole session: before any test module can import rclpy,
this file sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and claims a ``ROS_DOMAIN_ID``
that no other process on the machine holds; child processes inherit both. ``rclpy.init``
is wrapped so that a test that changed them fails instead of talking to the network.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest

from dvlt_ros.testing.ros_network import check_ros_network_isolated, isolate_ros_network

isolate_ros_network()

REPO_ROOT = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    env = os.environ.get("DVLT_REFERENCE_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Directory with ARCH.md, the manifest and the golden cases of the upstream code."""
    path = _reference_dir()
    if not (path / "ARCH.md").is_file():
        pytest.fail(
            f"reference data not found at {path}: set DVLT_REFERENCE_DIR to the folder holding "
            "ARCH.md and the golden *.npz files"
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def _guard_rclpy_init():
    """Make rclpy.init refuse to run unless ROS traffic stays on loopback in our domain."""
    if importlib.util.find_spec("rclpy") is None:
        yield
        return
    import rclpy

    original = rclpy.init

    @functools.wraps(original)
    def guarded_init(*args, **kwargs):
        check_ros_network_isolated()
        return original(*args, **kwargs)

    rclpy.init = guarded_init
    yield
    rclpy.init = original


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Skip GPU and TensorRT tests, with the reason, where the machine cannot run them."""
    has_cuda = _cuda_available()
    has_trt = has_cuda and importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    skip_trt = pytest.mark.skip(
        reason="needs TensorRT and a CUDA GPU (install the 'tensorrt' extra on a GPU machine)"
    )
    for item in items:
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(skip_trt)
        elif "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
