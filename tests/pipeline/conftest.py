"""Fixtures of the pipeline tests: a small synthetic rig and windows built from it."""

from __future__ import annotations

import pytest

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.synthetic import default_rig
from dvlt_ros.pipeline import (
    CameraFrame,
    RigSynchronizer,
    SyncConfig,
    ViewWindow,
    WindowConfig,
    WindowSelector,
)

RIG_TIMES = (0.0, 0.4, 0.8, 1.2, 1.6)
RIG_IMG_SIZE = 112


@pytest.fixture(scope="session")
def pipeline_rig():
    """Three 160x120 cameras (forward pair + left) on the default trajectory."""
    return default_rig(160, 120, num_cameras=3)


@pytest.fixture(scope="session")
def pipeline_gt_backend(pipeline_rig):
    """Ground-truth backend knowing every camera at ``RIG_TIMES``."""
    return GroundTruthBackend.for_rig(pipeline_rig, RIG_TIMES, img_size=RIG_IMG_SIZE)


def rig_windows(rig, times, config: WindowConfig | None = None) -> list[ViewWindow]:
    """Windows made by the real synchroniser and selector from the rig's renders."""
    sync = RigSynchronizer(SyncConfig(tuple(rig.names)))
    selector = WindowSelector(config or WindowConfig(max_timesteps=2, keyframe_min_spacing_ns=0))
    windows = []
    for t in times:
        stamp = round(t * 1e9)
        for view in rig.snapshot(t):
            frame_id = rig.camera(view.camera).optical_frame
            sync.add(CameraFrame(view.camera, stamp, frame_id, view.image), stamp)
        snapshot, _ = sync.poll(stamp)
        windows.append(selector.select(snapshot))
    return windows


@pytest.fixture(scope="session")
def make_rig_windows():
    """:func:`rig_windows`, for tests that need their own window settings."""
    return rig_windows


@pytest.fixture(scope="session")
def pipeline_windows(pipeline_rig):
    """Windows of two timesteps over ``RIG_TIMES``; consecutive ones share a snapshot."""
    return rig_windows(pipeline_rig, RIG_TIMES)
