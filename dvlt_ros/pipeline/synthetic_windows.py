"""View windows of a synthetic rig (dvlt_core.synthetic) made by the real synchroniser and
window selector: what tests and benchmarks of the pipeline feed it."""

from __future__ import annotations

from collections.abc import Iterable

from dvlt_core.synthetic import SyntheticRig
from dvlt_ros.pipeline.frames import CameraFrame
from dvlt_ros.pipeline.sync import RigSynchronizer, SyncConfig
from dvlt_ros.pipeline.window import ViewWindow, WindowConfig, WindowSelector


def rig_windows(rig: SyntheticRig, times: Iterable[float],
                config: WindowConfig | None = None) -> list[ViewWindow]:
    """One window per rig time ``t`` (seconds; stamps ``t`` in ns), every camera rendered at
    ``t``; the default config keeps two timesteps and every snapshot as a keyframe."""
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
