"""Placing each window's reconstruction in one persistent world frame.

A reconstruction comes out in its reference view's camera frame at the network's arbitrary
scale. :class:`WorldAligner` finds, per window, the similarity ``world_from_window``
(rotation R, translation t, scale s: ``p_world = s * R @ p + t``) that makes it continue
the earlier ones:

1. The first window (and the first after a reset) defines the world: ``world_from_window``
   is ``initial_world_from_reference`` (identity by default: the world is the first
   reference camera's optical frame) with the window's metric scale if one is known, else 1.
2. Later windows are anchored on *shared views*: views (same camera, same stamp) whose
   world pose an earlier window already estimated (the most recent estimate is kept).
   The similarity is :func:`dvlt_core.mapping.alignment.align_views` of the remembered
   world-unit poses and depth of the shared views onto this window's: R the chordal mean of
   ``R_world_i @ R_window_i^T``, s the median depth ratio at the same pixels (falling back
   to the spread of the shared camera centres, then to the previous scale), t the mean of
   ``c_world_i - s * R @ c_window_i`` over the shared centres.
3. Metric scale: when the backend is metric (``backend_metric``) s is fixed to 1 (world in
   metres); when a :class:`MetricScale` source is given (e.g. :class:`RigBaselineScale`
   from known rig extrinsics) and it yields a value, that value is used instead of the
   chained scale, so the world is in metres and scale cannot drift.
4. No shared view (``max_timesteps`` = 1, or pose fits failed): the previous placement is
   held and a ``no_shared_views`` WARN is reported.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from dvlt_core.geometry import Sim3
from dvlt_core.geometry.rotations import chordal_mean
from dvlt_core.mapping.alignment import Alignment, ViewGeometry, align_views, depth_samples
from dvlt_core.result import Reconstruction
from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.scale import MetricScale, RigBaselineScale
from dvlt_ros.pipeline.window import ViewWindow

__all__ = ["MetricScale", "Placement", "RigBaselineScale", "WorldAligner", "WorldConfig"]


@dataclass(frozen=True)
class WorldConfig:
    """``initial_world_from_reference``: 4x4 rigid pose (metres) of the first reference
    camera in the world (identity: the world is that camera's optical frame; pass e.g.
    ``world_from_base @ base_from_camera`` to anchor the world on the rig base).
    ``history_size`` bounds the remembered view estimates; ``depth_grid`` is the number of
    depth samples per image side used for scale alignment."""

    initial_world_from_reference: np.ndarray | None = None
    history_size: int = 64
    depth_grid: int = 24


@dataclass(frozen=True)
class Placement:
    """How one window was placed: ``world_from_window`` and on what it is based."""

    world_from_window: Sim3
    shared: tuple[tuple[str, int], ...]
    scale_source: str
    metric: bool
    events: tuple[PipelineEvent, ...] = ()


class WorldAligner:
    """Keeps the world: remembered view estimates and the last placement."""

    def __init__(
        self,
        config: WorldConfig | None = None,
        metric_scale: MetricScale | None = None,
        backend_metric: bool = False,
    ) -> None:
        self.config = config or WorldConfig()
        self.metric_scale = metric_scale
        self.backend_metric = backend_metric
        # Each remembered view's pose and depth samples in the world (its unit).
        self._history: OrderedDict[tuple[str, int], ViewGeometry] = OrderedDict()
        self._last: Placement | None = None
        self._epoch: int | None = None

    def reset(self) -> None:
        """Start a new world with the next window."""
        self._history.clear()
        self._last = None

    def place(
        self,
        window: ViewWindow,
        reconstruction: Reconstruction,
        metres_per_unit: float | None = None,
    ) -> Placement:
        """Place ``reconstruction`` (of ``window``) in the world and remember its views.

        ``metres_per_unit``: this window's metric scale when the caller measured it (the
        session's grounding, :mod:`~dvlt_ros.pipeline.grounding`); it wins over the
        ``metric_scale`` seam. The first metric window after non-metric ones converts the
        remembered world to metres (``world_rescaled``), so the world keeps one unit."""
        if self._epoch is not None and window.epoch != self._epoch:
            self.reset()
        self._epoch = window.epoch
        if metres_per_unit is not None and np.isfinite(metres_per_unit) and metres_per_unit > 0:
            metric_scale, metric = float(metres_per_unit), True
        else:
            metric_scale, metric = self._metric_scale(window, reconstruction)
        if self._last is None:
            initial = self.config.initial_world_from_reference
            placement = Placement(
                Sim3.from_rigid(np.eye(4) if initial is None else initial, metric_scale or 1.0),
                (),
                "initial",
                metric,
            )
        else:
            placement = self._align(window, reconstruction, metric_scale, metric)
        self._remember(window, reconstruction, placement.world_from_window)
        self._last = placement
        return placement

    def _metric_scale(
        self, window: ViewWindow, reconstruction: Reconstruction
    ) -> tuple[float | None, bool]:
        if self.backend_metric:
            return 1.0, True
        if self.metric_scale is not None:
            value = self.metric_scale.metres_per_unit(window, reconstruction)
            if value is not None and np.isfinite(value) and value > 0:
                return float(value), True
        return None, bool(self._last.metric) if self._last is not None else False

    def _align(
        self,
        window: ViewWindow,
        reconstruction: Reconstruction,
        metric_scale: float | None,
        metric: bool,
    ) -> Placement:
        previous = self._last
        shared = [
            i
            for i, key in enumerate(window.keys)
            if key in self._history and reconstruction.views[i].pose_valid
        ]
        if not shared:
            event = PipelineEvent(
                "no_shared_views",
                Level.WARN,
                "this window shares no view with earlier ones: the previous placement is held "
                "and the world may jump (set the parameter window_timesteps >= 2 so that "
                "windows overlap)",
                stamp_ns=window.stamp_ns,
            )
            return Placement(previous.world_from_window, (), "held", metric, (event,))
        views = [ViewGeometry.from_view(reconstruction.views[i], self.config.depth_grid)
                 for i in shared]
        known = [self._history[window.keys[i]] for i in shared]
        alignment = align_views(known, views)
        events: list[PipelineEvent] = []
        if metric_scale is not None and not previous.metric:
            events += self._rescale_to_metres(window, alignment, metric_scale)
        keys = tuple(window.keys[i] for i in shared)
        if metric_scale is None and alignment is not None:
            source = "shared_depth" if alignment.depth_scale else "shared_centres"
            return Placement(alignment.target_from_source, keys, source, metric, tuple(events))
        if metric_scale is not None:
            scale, source = metric_scale, "metric"
        else:
            scale, source = previous.world_from_window.scale, "held"
            events.append(
                PipelineEvent(
                    "scale_unreliable",
                    Level.WARN,
                    "shared views gave no usable depth or baseline: previous scale kept",
                    stamp_ns=window.stamp_ns,
                )
            )
        # The scale is given: the rotation as align_views fits it, the translation for it.
        rotation = (alignment.target_from_source.rotation if alignment is not None else
                    chordal_mean(np.stack([k.c2w[:3, :3] @ v.c2w[:3, :3].T
                                           for k, v in zip(known, views, strict=True)])))
        centres_world = np.stack([k.c2w[:3, 3] for k in known])
        centres = np.stack([v.c2w[:3, 3] for v in views])
        translation = (centres_world - scale * centres @ rotation.T).mean(axis=0)
        return Placement(Sim3(rotation, translation, scale), keys, source, metric, tuple(events))

    def _rescale_to_metres(
        self, window: ViewWindow, alignment: Alignment | None, metres_per_unit: float
    ) -> list[PipelineEvent]:
        """Convert the remembered world (arbitrary units) to metres about its origin: the
        shared views' ``alignment`` gives the world units per window unit, the metric scale
        the metres."""
        if alignment is None:
            return []
        factor = metres_per_unit / alignment.target_from_source.scale
        for estimate in self._history.values():
            estimate.c2w[:3, 3] *= factor
            estimate.depth[...] *= factor
        return [PipelineEvent(
            "world_rescaled", Level.INFO,
            f"metric scale available from this window: the world converted to metres "
            f"(x{factor:.4g}); earlier products were in arbitrary units",
            stamp_ns=window.stamp_ns,
        )]

    def _remember(
        self, window: ViewWindow, reconstruction: Reconstruction, world_from_window: Sim3
    ) -> None:
        for key, view in zip(window.keys, reconstruction.views, strict=True):
            if not view.pose_valid:
                continue
            self._history.pop(key, None)
            self._history[key] = ViewGeometry(
                world_from_window.apply_c2w(view.extrinsics_c2w),
                depth_samples(view, self.config.depth_grid) * world_from_window.scale,
            )
        while len(self._history) > self.config.history_size:
            self._history.popitem(last=False)

