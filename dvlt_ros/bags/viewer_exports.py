"""``dvlt-ros process --glb / --rrd``: the processed bag as ``scene.glb`` and ``recording.rrd``.

The files are those of ``dvlt-reconstruct --glb / --rrd`` (one implementation,
:mod:`dvlt_core.viewer_exports`), drawn in the output world frame:

* ``scene<epoch>.glb``: the fused cloud (the points of ``cloud<epoch>.ply``) and a frustum
  per reconstructed view of the newest snapshot of every window (the camera poses of the
  TUM trajectories), named ``frustum_<camera>@<stamp ns>``, coloured per camera;
* ``recording<epoch>.rrd``: per window, each camera of its newest snapshot at entity
  ``world/cameras/<camera>`` (pose, pinhole, image, depth in world units, confidence),
  logged at the window's index on the ``view`` timeline and at its ROS stamp on ``stamp``
  (a timestamp, exact to the nanosecond);
  per camera a trajectory ``world/trajectory/<camera>``; the fused cloud as
  ``world/points``. Depth is in metres (``meter = 1``) for windows that are metric, and
  ``world/units`` says metres only when every window of the world was.

One pair of files per world epoch (suffix ``.epoch<N>`` after a reset, as the clouds),
written into the staged output directory, so they appear with the rest, atomically. The
recording is streamed to its file while the bag is processed (memory stays bounded); the
scene keeps only the cameras. Views whose pose fit failed are left out, as in the cloud.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from dvlt_core.viewer_exports.glb import require_trimesh, write_glb_scene
from dvlt_core.viewer_exports.packages import ViewerPackageMissingError
from dvlt_core.viewer_exports.rrd import RrdRecorder, require_rerun
from dvlt_core.viewer_exports.views import ExportCamera, view_colors
from dvlt_ros.bags.staged_output import StagedOutput
from dvlt_ros.pipeline.accumulate import FusedCloud, epoch_suffix
from dvlt_ros.pipeline.engine import CycleResult

__all__ = ["BagViewerExports", "ViewerPackageMissingError", "require_viewer_exports"]


def require_viewer_exports(glb: bool, rrd: bool) -> None:
    """Raise :class:`ViewerPackageMissingError` (saying what to install) when an asked-for
    export's package is missing."""
    if glb:
        require_trimesh()
    if rrd:
        require_rerun()


class BagViewerExports:
    """Collects the windows of a run (:meth:`add`) and writes the files (:meth:`finish`)
    into the staged ``output``; refuses at once when an export's package is missing."""

    def __init__(self, cameras: Sequence[str], glb: bool, rrd: bool) -> None:
        require_viewer_exports(glb, rrd)
        self.glb, self.rrd = glb, rrd
        self._colors = dict(zip(cameras, view_colors(len(cameras)), strict=True))
        self._cameras: dict[int, list[ExportCamera]] = {}
        self._recorders: dict[int, RrdRecorder] = {}
        self._metric: dict[int, bool] = {}
        self._windows = 0

    @property
    def enabled(self) -> bool:
        return self.glb or self.rrd

    def add(self, result: CycleResult, output: StagedOutput) -> None:
        """The newest snapshot's reconstructed views of one window, in the world frame."""
        if not self.enabled:
            return
        epoch, sim = result.epoch, result.placement.world_from_window
        self._metric[epoch] = self._metric.get(epoch, True) and result.metric
        views = {view.name: view for view in result.reconstruction.views}
        for pose in result.poses:
            view = views[f"{pose.camera}@{pose.stamp_ns}"]
            color = self._colors[pose.camera]
            if self.glb:
                world_view = dataclasses.replace(view, extrinsics_c2w=pose.world_from_camera)
                self._cameras.setdefault(epoch, []).append(
                    ExportCamera.of_view(world_view, color))
            if self.rrd:
                in_world = dataclasses.replace(
                    view, name=pose.camera, extrinsics_c2w=pose.world_from_camera,
                    depth=view.depth * float(sim.scale),
                    world_points=sim.apply_points(view.world_points.reshape(-1, 3)).reshape(
                        view.world_points.shape))
                self._recorder(epoch, output).log_view(
                    in_world, self._windows, color, result.metric,
                    trajectory=f"world/trajectory/{pose.camera}", stamp_ns=pose.stamp_ns)
        self._windows += 1

    def finish(self, fused: FusedCloud, output: StagedOutput) -> dict[str, list[str]]:
        """Write the scenes and complete the recordings of every world epoch; returns the
        file names by kind (``glb``, ``rrd``)."""
        files: dict[str, list[str]] = {}
        if not self.enabled:
            return files
        for epoch in sorted(set(fused.epochs) | set(self._metric)) or [0]:
            points, colors = fused.arrays(epoch)
            metric = self._metric.get(epoch, False)
            suffix = epoch_suffix(epoch)
            if self.glb:
                name = f"scene{suffix}.glb"
                write_glb_scene(output.path(name), points, colors,
                                self._cameras.get(epoch, []), metric)
                files.setdefault("glb", []).append(name)
            if self.rrd:
                self._recorder(epoch, output).close(points, colors, metric)
                files.setdefault("rrd", []).append(f"recording{suffix}.rrd")
        self._recorders.clear()
        return files

    def abort(self) -> None:
        """Close the open recordings without completing them (the run is discarded)."""
        for recorder in self._recorders.values():
            recorder.abandon()
        self._recorders.clear()

    def _recorder(self, epoch: int, output: StagedOutput) -> RrdRecorder:
        if epoch not in self._recorders:
            path = output.path(f"recording{epoch_suffix(epoch)}.rrd")
            self._recorders[epoch] = RrdRecorder(require_rerun(), path)
        return self._recorders[epoch]
