"""Grounding each window: metric scale and the robot's own frames, from TF and depth.

Per window, :class:`Grounding` (owned by the session's pipeline)

1. looks the transforms it needs up at the image stamps through a :class:`TransformLookup`
   (``rig``: ``base_frame -> <image frame_id>``; ``odometry``: ``odom_frame -> base_frame``;
   ``anchor: tf``: ``world_frame -> <image frame_id>``), collecting why any is missing;
2. measures the scale with every requested source (:func:`~dvlt_ros.pipeline.scale.rig_scale`,
   :func:`~dvlt_ros.pipeline.scale.odometry_scale`,
   :func:`~dvlt_ros.pipeline.scale.depth_scale`), chooses one (``auto``:
   :func:`~dvlt_ros.pipeline.scale.choose_scale`, conflicts reported) and smooths it over
   windows (:class:`~dvlt_ros.pipeline.scale.ScaleSmoother`) relative to a pure shared-view
   chain of its own (the chained scale is the reference: what is smoothed is metres per
   chain unit, constant up to the chain's slow drift);
3. places the window: ``anchor: chain`` continues the world with
   :class:`~dvlt_ros.pipeline.world.WorldAligner` at the metric scale when there is one;
   ``anchor: tf`` aligns the predicted camera poses to their TF poses
   (:func:`~dvlt_ros.pipeline.anchor.anchor_reconstruction`: SE(3) with the metric scale,
   Sim(3) otherwise) and, when that is refused, falls back to the chain carried into
   ``world_frame`` by the last accepted alignment (at the measured scale about the chain
   point it pinned, when there is one), with the reason reported.

A metric backend (``backend.metric``) fixes the scale at 1 (source ``backend``). Without a
source (``scale_source: none``) or an estimate, products stay up to scale and
:class:`GroundingStatus` says why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from dvlt_core.geometry import Sim3, TransformError
from dvlt_core.result import Reconstruction, ViewReconstruction
from dvlt_ros.pipeline.anchor import Anchor, anchor_reconstruction
from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.scale import (
    AUTO_ORDER,
    MeasuredDepth,
    MetricScale,
    ScaleEstimate,
    ScaleOutcome,
    ScaleSmoother,
    ScaleUnavailable,
    SmoothedScale,
    choose_scale,
    depth_scale,
    odometry_scale,
    rig_scale,
)
from dvlt_ros.pipeline.settings import ANCHORS, OWN_WORLD_FRAME, SCALE_SOURCES
from dvlt_ros.pipeline.window import ViewWindow
from dvlt_ros.pipeline.world import Placement, WorldAligner, WorldConfig


class TransformLookup(Protocol):
    """The robot's transforms: ``dvlt_core.geometry.TfTree`` and
    ``dvlt_ros.node_support.tf_listener.TfListener`` satisfy it."""

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """4x4 ``target_from_source`` (metres) at ``stamp_ns``; raises
        ``FrameNotFoundError``, ``NotConnectedError`` or ``ExtrapolationError``."""


@dataclass(frozen=True)
class GroundingConfig:
    """The grounding settings (parameters of the same names, docs/world_frame.md).

    ``depth_slop_ns``: a depth image matches a view when their stamps differ by at most
    this (the synchroniser's slop). ``max_disagreement``: ``auto`` reports sources that
    differ from the chosen one by more than this (and their combined errors)."""

    scale_source: str = "none"
    anchor: str = "chain"
    world_frame: str = OWN_WORLD_FRAME
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    min_baseline: float = 0.05
    min_motion: float = 0.05
    depth_slop_ns: int = 20_000_000
    max_disagreement: float = 0.05

    def __post_init__(self) -> None:
        if self.scale_source not in SCALE_SOURCES:
            raise ValueError(f"scale_source must be one of {SCALE_SOURCES}, got "
                             f"{self.scale_source!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")

    @property
    def sources(self) -> tuple[str, ...]:
        """The scale sources measured each window (``auto``: all, in its order)."""
        if self.scale_source == "auto":
            return AUTO_ORDER
        return () if self.scale_source == "none" else (self.scale_source,)

    @property
    def uses_depth(self) -> bool:
        """Whether depth images are used (the node subscribes ``<ns>/<depth_topic>``)."""
        return "depth" in self.sources

    @property
    def uses_transforms(self) -> bool:
        """Whether the session looks transforms up (needs ``transforms``)."""
        return self.anchor == "tf" or bool({"rig", "odometry"} & set(self.sources))


@dataclass(frozen=True)
class GroundingStatus:
    """How one window was grounded (the cycle report and diagnostics show it).

    ``metres_per_unit``: the window's scale in use (NaN when not metric); ``source``: where
    it came from (``rig``, ``odometry``, ``depth``, ``external`` (a ``MetricScale``
    given by the caller), ``backend`` (a metric backend), ``tf`` (fitted by a Sim(3) TF
    anchor) or ``none``); ``spread`` (relative, NaN when unknown) and ``constraints`` of
    the smoothed history; ``anchor``: ``chain``, ``tf`` (aligned to TF this window),
    ``tf_held`` (refused: the last TF alignment carried the chain) or ``unanchored``
    (refused before any alignment: the window is in the chain's own frame);
    ``reasons``: why each source (or the anchor) gave nothing; ``conflicts``: sources that
    disagree with the chosen one (``auto``); ``tf_ms``: time spent on TF lookups."""

    metric: bool
    metres_per_unit: float
    source: str
    spread: float = math.nan
    constraints: int = 0
    anchor: str = "chain"
    reasons: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    anchor_rms_m: float = math.nan
    tf_ms: float = 0.0

    @property
    def summary(self) -> str:
        """One line for diagnostics."""
        if not self.metric:
            return "no metric scale available: " + ("; ".join(self.reasons) or "none requested")
        text = f"{self.source}: {self.metres_per_unit:.6g} m/unit"
        if math.isfinite(self.spread):
            text += f", spread {self.spread:.2%}"
        if self.constraints:
            text += f", {self.constraints} constraints"
        if self.conflicts:
            text += f"; disagrees with {', '.join(self.conflicts)}"
        return text


@dataclass
class _Lookups:
    """The TF answers of one window, and what went wrong (one line per problem)."""

    transforms: TransformLookup | None
    problems: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def get(self, target: str, source: str, stamp_ns: int, what: str) -> np.ndarray | None:
        if self.transforms is None:
            self.problems.setdefault("transforms", "no TF source given to the session")
            return None
        if not source:
            self.problems.setdefault(what, f"{what}: the image has no frame_id")
            return None
        start = time.perf_counter()
        try:
            pose = np.asarray(self.transforms.lookup(target, source, stamp_ns), dtype=np.float64)
        except (TransformError, LookupError, ValueError) as exc:
            self.problems.setdefault(what, f"{what}: {exc}")
            return None
        finally:
            self.seconds += time.perf_counter() - start
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            self.problems.setdefault(what, f"{what}: TF {target} -> {source} is not a 4x4 pose")
            return None
        return pose


def odometry_camera_pose(transforms: TransformLookup | None, config: GroundingConfig,
                         camera: str, frame_id: str, stamp_ns: int) -> np.ndarray | None:
    """``odom_from_camera`` (4x4, metres) of a camera image from TF (``odom_frame ->
    base_frame`` times the mount ``base_frame -> frame_id``, both at ``stamp_ns``); None
    when either lookup fails (or there is no TF)."""
    lookups = _Lookups(transforms)
    odom_from_base = lookups.get(config.odom_frame, config.base_frame, stamp_ns, "odometry")
    mount = lookups.get(config.base_frame, frame_id, stamp_ns, camera)
    return None if odom_from_base is None or mount is None else odom_from_base @ mount


def registered_depth(view: ViewReconstruction, sensor: MeasuredDepth) -> MeasuredDepth:
    """A registered depth image (no ``k``) of another size than the view's maps gets the
    view's intrinsics scaled to its size, so that it is resampled instead of refused."""
    if sensor.k is not None or sensor.depth.shape == view.depth.shape:
        return sensor
    height, width = view.depth.shape
    dh, dw = sensor.depth.shape
    k = np.array(view.intrinsics, dtype=np.float64)
    sx, sy = dw / width, dh / height
    k[0, :] *= sx
    k[1, :] *= sy
    k[0, 2] += 0.5 * sx - 0.5
    k[1, 2] += 0.5 * sy - 0.5
    return MeasuredDepth(sensor.depth, k)


class Grounding:
    """The per-window grounding step (see the module docstring). Not thread-safe: the
    pipeline's cycle calls :meth:`place`."""

    def __init__(
        self,
        config: GroundingConfig | None = None,
        world: WorldConfig | None = None,
        *,
        transforms: TransformLookup | None = None,
        backend_metric: bool = False,
        metric_scale: MetricScale | None = None,
    ) -> None:
        self.config = config or GroundingConfig()
        self.transforms = transforms
        self.backend_metric = backend_metric
        self.metric_scale = metric_scale
        self.world = WorldAligner(world, backend_metric=backend_metric)
        self._chain = WorldAligner(WorldConfig(history_size=self.world.config.history_size))
        self._smoother = ScaleSmoother()
        self._world_from_chain: Sim3 | None = None
        # Where the last TF alignment pinned the chain: that window's origin, chain units.
        self._anchored_in_chain = np.zeros(3)
        self._epoch: int | None = None
        self.last_status: GroundingStatus | None = None

    def reset(self) -> None:
        """A new world: forget the chain, the smoothed scale and the TF alignment."""
        self.world.reset()
        self._chain.reset()
        self._smoother.reset()
        self._world_from_chain = None

    def place(
        self,
        window: ViewWindow,
        reconstruction: Reconstruction,
        depths: Sequence[MeasuredDepth | None] | None = None,
    ) -> tuple[Placement, GroundingStatus]:
        """Ground and place one window; ``depths``: a measured depth per view (None: none)."""
        if self._epoch is not None and window.epoch != self._epoch:
            self.reset()
        self._epoch = window.epoch
        cfg = self.config
        lookups = _Lookups(self.transforms)
        chain = self._chain.place(window, reconstruction).world_from_window
        events: list[PipelineEvent] = []
        scale, status = self._scale(window, reconstruction, depths, lookups, chain, events)
        if cfg.anchor == "tf":
            placement, status = self._anchor(window, reconstruction, scale, status, lookups,
                                             chain, events)
        else:
            placement = self.world.place(window, reconstruction, scale)
        for what, problem in lookups.problems.items():
            camera = what if what in window_cameras(window) else None
            events.append(PipelineEvent("tf_unavailable", Level.WARN,
                                        f"{problem}; check the TF tree (ros2 run tf2_tools "
                                        "view_frames) and the image frame_ids", camera,
                                        window.stamp_ns))
        if cfg.sources and not status.metric:
            events.append(PipelineEvent("scale_unavailable", Level.WARN, status.summary
                                        + "; publishing up to scale", stamp_ns=window.stamp_ns))
        status = _with(status, tf_ms=lookups.seconds * 1e3)
        self.last_status = status
        placement = Placement(placement.world_from_window, placement.shared,
                              placement.scale_source, status.metric or placement.metric,
                              placement.events + tuple(events))
        return placement, status

    # ----------------------------------------------------------------- scale
    def _scale(
        self,
        window: ViewWindow,
        recon: Reconstruction,
        depths: Sequence[MeasuredDepth | None] | None,
        lookups: _Lookups,
        chain: Sim3,
        events: list[PipelineEvent],
    ) -> tuple[float | None, GroundingStatus]:
        """This window's metres per unit (None: unknown) and its status so far."""
        if self.backend_metric:
            return 1.0, GroundingStatus(True, 1.0, "backend")
        outcomes = [self._measure(source, window, recon, depths, lookups)
                    for source in self.config.sources]
        if self.metric_scale is not None:
            value = self.metric_scale.metres_per_unit(window, recon)
            if value is not None and math.isfinite(value) and value > 0:
                outcomes.insert(0, ScaleEstimate("external", float(value), math.nan,
                                                 math.nan, 1))
        if not outcomes:
            return None, GroundingStatus(False, math.nan, "none",
                                         reasons=("scale_source is none",))
        choice = choose_scale(outcomes, order=("external", *AUTO_ORDER),
                              max_disagreement=self.config.max_disagreement)
        reasons = tuple(f"{o.source}: {o.reason}" for o in outcomes
                        if isinstance(o, ScaleUnavailable))
        if choice.conflicts:
            events.append(PipelineEvent("scale_conflict", Level.WARN,
                                        f"{choice.summary}; check the TF mounts, the odometry "
                                        "and the depth sensor's units", stamp_ns=window.stamp_ns))
        measured: ScaleOutcome | None = choice.estimate
        if measured is None:
            measured = ScaleUnavailable("none", "; ".join(reasons))
        smoothed = self._smoother.update(measured, float(chain.scale))
        if smoothed is None:
            return None, GroundingStatus(False, math.nan, "none", reasons=reasons)
        status = _status(smoothed, reasons, choice.conflicts)
        return smoothed.metres_per_unit, status

    def _measure(
        self,
        source: str,
        window: ViewWindow,
        recon: Reconstruction,
        depths: Sequence[MeasuredDepth | None] | None,
        lookups: _Lookups,
    ) -> ScaleOutcome:
        cfg = self.config
        if source == "depth":
            return self._depth(recon, depths)
        mounts = self._mounts(window, lookups)
        if source == "rig":
            return rig_scale(window, recon, mounts, min_baseline=cfg.min_baseline)

        def odom_from_base(stamp_ns: int) -> np.ndarray | None:
            return lookups.get(cfg.odom_frame, cfg.base_frame, stamp_ns, "odometry")

        return odometry_scale(window, recon, _memo(odom_from_base), mounts,
                              min_motion=cfg.min_motion)

    def _mounts(self, window: ViewWindow, lookups: _Lookups) -> dict[str, np.ndarray]:
        """``base_from_camera`` of each frame_id of the window (at its newest stamp)."""
        mounts: dict[str, np.ndarray] = {}
        for frame in window.frames:
            if frame.frame_id in mounts:
                continue
            pose = lookups.get(self.config.base_frame, frame.frame_id, frame.stamp_ns,
                               frame.camera)
            if pose is not None:
                mounts[frame.frame_id] = pose
        return mounts

    def _depth(self, recon: Reconstruction,
               depths: Sequence[MeasuredDepth | None] | None) -> ScaleOutcome:
        if depths is None or not any(d is not None for d in depths):
            return ScaleUnavailable("depth", "no depth image matched the window's images")
        try:
            sensors = [None if d is None else registered_depth(v, d)
                       for v, d in zip(recon.views, depths, strict=True)]
            return depth_scale(recon, sensors)
        except ValueError as exc:
            return ScaleUnavailable("depth", str(exc))

    # ----------------------------------------------------------------- anchor
    def _anchor(
        self,
        window: ViewWindow,
        recon: Reconstruction,
        scale: float | None,
        status: GroundingStatus,
        lookups: _Lookups,
        chain: Sim3,
        events: list[PipelineEvent],
    ) -> tuple[Placement, GroundingStatus]:
        world = self.config.world_frame
        tf_poses = [lookups.get(world, f.frame_id, f.stamp_ns, f.camera) for f in window.frames]
        outcome = anchor_reconstruction(recon, tf_poses, fixed_scale=scale)
        if isinstance(outcome, Anchor):
            sim = outcome.world_from_window
            self._world_from_chain = sim.compose(chain.inverse())
            self._anchored_in_chain = np.asarray(chain.translation, np.float64)
            if scale is None:  # Sim(3): the scale is TF's, fitted to the cameras' motion
                status = _with(status, metric=True, metres_per_unit=float(sim.scale),
                               source="tf", constraints=len(outcome.views))
            status = _with(status, anchor="tf", anchor_rms_m=outcome.rms_position)
            return Placement(sim, (), "tf", status.metric), status
        held = self._world_from_chain
        if held is None:
            reason = f"{outcome.reason}; the window stays in the chain's own frame"
            sim, anchor = chain, "unanchored"
        else:
            reason = f"{outcome.reason}; the last TF alignment carries the chain"
            sim, anchor = self._held(chain, scale).compose(chain), "tf_held"
        events.append(PipelineEvent("anchor_refused", Level.WARN,
                                    f"not aligned to {world}: {reason}",
                                    stamp_ns=window.stamp_ns))
        metric = status.metric or held is not None  # a TF alignment is in TF's metres
        if metric and not status.metric:
            status = _with(status, metric=True, metres_per_unit=float(sim.scale), source="tf")
        status = _with(status, anchor=anchor, reasons=(*status.reasons, f"anchor: {reason}"))
        return Placement(sim, (), anchor, metric), status


    def _held(self, chain: Sim3, scale: float | None) -> Sim3:
        """``world_from_chain`` of the last TF alignment for a window placed in the chain at
        ``chain``. With a measured ``scale`` (metres per window unit) the chain is converted
        at that scale (``scale / chain.scale`` metres per chain unit) about the chain point
        TF last pinned, so the window's geometry and its position in the world come from one
        similarity of the chain."""
        held = self._world_from_chain
        if scale is None:
            return held
        factor = scale / float(chain.scale)
        pinned = self._anchored_in_chain
        rotation = np.asarray(held.rotation, np.float64)
        return Sim3(rotation, held.apply_points(pinned) - factor * rotation @ pinned, factor)


def window_cameras(window: ViewWindow) -> set[str]:
    return {f.camera for f in window.frames}


def _memo(lookup: Callable[[int], np.ndarray | None]) -> Callable[[int], np.ndarray | None]:
    cache: dict[int, np.ndarray | None] = {}

    def cached(stamp_ns: int) -> np.ndarray | None:
        if stamp_ns not in cache:
            cache[stamp_ns] = lookup(stamp_ns)
        return cache[stamp_ns]

    return cached


def _status(smoothed: SmoothedScale, reasons: tuple[str, ...],
            conflicts: tuple[str, ...]) -> GroundingStatus:
    return GroundingStatus(True, smoothed.metres_per_unit, smoothed.source, smoothed.spread,
                           smoothed.constraints, reasons=reasons, conflicts=conflicts)


def _with(status: GroundingStatus, **changes: object) -> GroundingStatus:
    return replace(status, **changes)
