"""Fixtures of the pipeline tests: a small synthetic rig and windows built from it."""

from __future__ import annotations

import pytest
from rig_constants import RIG_IMG_SIZE, RIG_TIMES

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.synthetic import default_rig
from dvlt_ros.pipeline.synthetic_windows import rig_windows


@pytest.fixture(scope="session")
def pipeline_rig():
    """Three 160x120 cameras (forward pair + left) on the default trajectory."""
    return default_rig(160, 120, num_cameras=3)


@pytest.fixture(scope="session")
def pipeline_gt_backend(pipeline_rig):
    """Ground-truth backend knowing every camera at ``RIG_TIMES``."""
    return GroundTruthBackend.for_rig(pipeline_rig, RIG_TIMES, img_size=RIG_IMG_SIZE)


@pytest.fixture(scope="session")
def make_rig_windows():
    """:func:`rig_windows`, for tests that need their own window settings."""
    return rig_windows


@pytest.fixture(scope="session")
def pipeline_windows(pipeline_rig):
    """Windows of two timesteps over ``RIG_TIMES``; consecutive ones share a snapshot."""
    return rig_windows(pipeline_rig, RIG_TIMES)
