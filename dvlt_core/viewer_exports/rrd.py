"""``recording.rrd``: the reconstruction as a rerun recording, written to a file.

No viewer is spawned and nothing goes over the network: the recording stream's only sink
is the file. What it holds (entity paths):

* ``world``: ``ViewCoordinates.RDF``, the reconstruction's OpenCV world (x right, y down,
  z forward, about view 0's camera), and ``world/units`` a text saying the unit;
* ``world/points``: ``Points3D`` with colours, exactly the points the caller selected
  (``dvlt-reconstruct`` passes those of ``points.ply``), static;
* ``world/cameras/<view>``: the camera-to-world pose (``Transform3D``) and the camera
  (``Pinhole`` with the view's intrinsics and size, ``camera_xyz=RDF``, in the view's
  colour), with children ``image`` (RGB), ``depth`` (``DepthImage``: ``meter=1`` when
  the reconstruction is metric, else without a unit and ``world/units`` says "arbitrary")
  and ``confidence`` (float ``Image``); invalid pixels are 0 (no depth);
* ``world/trajectory``: the camera centres so far as a ``LineStrips3D``.

Time: each view is logged at its index on the ``view`` timeline and at its timestamp on
``stamp`` (seconds), so scrubbing either shows the cameras arriving and the trajectory
growing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from dvlt_core.atomic import write_atomic
from dvlt_core.result import Reconstruction, ViewReconstruction
from dvlt_core.viewer_exports.packages import require_viewer_package
from dvlt_core.viewer_exports.views import exported_views, view_colors

APPLICATION_ID = "dvlt_reconstruct"
METRIC_UNITS = "Depth, points and poses are in metres (DepthImage meter = 1)."
ARBITRARY_UNITS = (
    "Depth, points and poses are in the reconstruction's arbitrary unit (DVLT predicts up to "
    "scale): depth images carry no metric unit."
)


def require_rerun() -> ModuleType:
    """rerun (rerun-sdk), or :class:`ViewerPackageMissingError` saying how to install it."""
    return require_viewer_package("rerun", "the .rrd export (--rrd)")


def camera_entity(name: str, rr: ModuleType) -> str:
    """The entity path of view ``name``'s camera (the name escaped as one path part)."""
    return f"world/cameras/{rr.escape_entity_path_part(name)}"


class RrdRecorder:
    """A recording stream whose only sink is the file ``path``, logged a view at a time
    (:meth:`log_view`) and completed by :meth:`close` with the points and the unit."""

    def __init__(self, rr: ModuleType, path: str | Path) -> None:
        self.rr = rr
        self.rec = rr.RecordingStream(APPLICATION_ID, make_default=False,
                                      make_thread_default=False)
        self.rec.save(Path(path))
        self.rec.set_log_time_enabled(False)
        self.rec.log("world", rr.ViewCoordinates.RDF, static=True)
        self._centres: dict[str, list[np.ndarray]] = {}

    def log_view(
        self,
        view: ViewReconstruction,
        sequence: int,
        color: np.ndarray,
        metric: bool,
        trajectory: str = "world/trajectory",
        stamp_ns: int | None = None,
    ) -> None:
        """Log ``view`` at ``sequence`` on the ``view`` timeline and its timestamp on
        ``stamp``: its camera ``world/cameras/<name>`` in ``color``, image, depth (in
        metres when ``metric``) and confidence, and its centre appended to ``trajectory``.
        ``stamp_ns``: an absolute time (e.g. a ROS stamp), logged exactly on ``stamp`` as a
        timestamp instead of the view's timestamp in seconds as a duration."""
        rr, rec = self.rr, self.rec
        rec.set_time("view", sequence=sequence)
        if stamp_ns is None:
            rec.set_time("stamp", duration=float(view.timestamp))
        else:
            rec.set_time("stamp", timestamp=np.datetime64(int(stamp_ns), "ns"))
        entity = camera_entity(view.name, rr)
        c2w = np.asarray(view.extrinsics_c2w, np.float64)
        rec.log(entity, rr.Transform3D(translation=c2w[:3, 3], mat3x3=c2w[:3, :3]))
        h, w = view.depth.shape
        rec.log(
            entity,
            rr.Pinhole(
                image_from_camera=np.asarray(view.intrinsics, np.float64),
                width=w,
                height=h,
                camera_xyz=rr.ViewCoordinates.RDF,
                color=color,
            ),
        )
        rec.log(f"{entity}/image", rr.Image(view.image))
        depth = np.where(view.valid, view.depth, 0.0).astype(np.float32)
        rec.log(f"{entity}/depth", rr.DepthImage(depth, meter=1.0 if metric else None))
        confidence = np.where(view.valid, view.confidence, 0.0).astype(np.float32)
        rec.log(f"{entity}/confidence", rr.Image(confidence))
        centres = self._centres.setdefault(trajectory, [])
        centres.append(c2w[:3, 3])
        rec.log(trajectory, rr.LineStrips3D([np.array(centres)]))

    def close(self, points: np.ndarray, colors: np.ndarray, metric: bool) -> None:
        """Log the points (static) and the unit, then flush and close the file."""
        rr, rec = self.rr, self.rec
        rec.log("world/units", rr.TextDocument(METRIC_UNITS if metric else ARBITRARY_UNITS),
                static=True)
        rec.log("world/points", rr.Points3D(points, colors=colors), static=True)
        rec.flush()
        rec.disconnect()

    def abandon(self) -> None:
        """Stop writing without completing the recording (its file is to be discarded)."""
        self.rec.disconnect()


def record(
    rr: ModuleType,
    path: Path,
    recon: Reconstruction,
    points: np.ndarray,
    colors: np.ndarray,
    views: Sequence[int],
    metric: bool,
) -> None:
    """Log the reconstruction into a recording stream whose only sink is the file ``path``."""
    recorder = RrdRecorder(rr, path)
    palette = view_colors(len(recon.views))
    for index in views:
        recorder.log_view(recon.views[index], index, palette[index], metric)
    recorder.close(points, colors, metric)


def write_rrd(
    path: str | Path,
    recon: Reconstruction,
    points: np.ndarray,
    colors: np.ndarray,
    include_failed: bool = False,
    metric: bool = False,
) -> None:
    """Write the recording of :func:`record` atomically to ``path`` (a temporary file in the
    same folder, renamed when complete). ``metric``: the geometry is in metres."""
    rr = require_rerun()
    views = exported_views(recon, include_failed)
    write_atomic(path, lambda tmp: record(rr, tmp, recon, points, colors, views, metric))
