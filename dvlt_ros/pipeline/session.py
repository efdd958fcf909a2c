"""``ReconstructionSession``: the one way frames become cycle products, live and offline.

The session owns everything between camera frames and what a cycle publishes, without
ROS: the synchroniser (with the arrival time of each queued frame), the window selector,
the K policy, the :class:`ReconstructionPipeline`, the lossless queue, the settings and
their changes (every check, per value and across values), the cycle report, the
trajectories and the fused cloud. The live node (:mod:`dvlt_ros.nodes.reconstruct_node`)
feeds it from subscriptions and publishes what it returns; ``dvlt-ros process`` and
``dvlt-ros demo`` drive the same class, so the same frames in the same order give the same
windows, K (fixed mode) and results.

Grounding (docs/world_frame.md): with ``scale_source`` rig, odometry or auto, or
``anchor: tf``, the session looks the robot's transforms up itself at the image stamps
through ``transforms`` (a :class:`~dvlt_ros.pipeline.grounding.TransformLookup`: the live
node's TF listener, or a ``TfTree`` filled from a bag); depth images for ``scale_source``
depth or auto come in through :meth:`add_depth`.

Loop closure (``loop_closure: true``, :mod:`~dvlt_ros.pipeline.loop_map`): every
reconstructed window becomes a keyframe of the map; after publishing a cycle the caller
runs :meth:`close_loops` (at most ``loop_verify_per_cycle`` model runs) and publishes the
map's products (:meth:`map_from_world`, :meth:`map_path`, :attr:`map_cloud`) when they
changed; :meth:`reset_map` clears the map.

Per image message: :meth:`add_frame` (or :meth:`count_rejected`), then, lossless,
:meth:`after_image` and :meth:`next_queued` until it returns None; else :meth:`poll` at
the cycle rate. Each snapshot: :meth:`reconstruct`, publish the result, :meth:`finish`
(then :meth:`close_loops`).
The input methods and :meth:`propose` may be called from another thread than the cycle.
:meth:`reconstruct` and :meth:`close_loops` run with ``torch_threads`` intra-op threads on
the thread that calls them (:mod:`~dvlt_ros.pipeline.threads`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from dvlt_core.backends import InferenceBackend
from dvlt_core.mapping.loop_closer import Describer
from dvlt_core.mapping.verification import LoopVerdict
from dvlt_ros.pipeline import configs
from dvlt_ros.pipeline.accumulate import FusedCloud, Trajectories
from dvlt_ros.pipeline.engine import CycleResult, ReconstructionPipeline
from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.frames import CameraFrame
from dvlt_ros.pipeline.grounding import TransformLookup, odometry_camera_pose
from dvlt_ros.pipeline.k_policy import KDecision, KPolicy
from dvlt_ros.pipeline.loop_map import UNAVAILABLE, LoopMap, LoopStats
from dvlt_ros.pipeline.products import build_cloud
from dvlt_ros.pipeline.report import CycleReport
from dvlt_ros.pipeline.scale import MeasuredDepth
from dvlt_ros.pipeline.settings import (
    ParamValue,
    camera_label,
    check_combination,
    check_values,
)
from dvlt_ros.pipeline.sync import CameraStats, RigSnapshot, RigSynchronizer
from dvlt_ros.pipeline.threads import torch_threads
from dvlt_ros.pipeline.window import ViewWindow, WindowSelector
from dvlt_ros.pipeline.world import MetricScale

# Lossless mode: images waiting for reconstruction and acknowledgement (the replay tool
# keeps one in flight; the bound only matters when lossless is misused on live cameras).
LOSSLESS_QUEUE = 64
#: Depth images kept per camera until a window uses them (the newest win): a few cycles of
#: a 30 Hz sensor, bounded because each holds a full image.
DEPTH_QUEUE = 16


@dataclass(frozen=True)
class ReconstructedSnapshot:
    """One reconstructed snapshot: its window, the K decision and the result.
    ``sync_wait_ms``: age of its newest frame when the cycle took it; ``path_updated``:
    whether the reference camera's path got a pose (then it is published); ``loop_events``:
    what the loop closure reported when adding the keyframe."""

    window: ViewWindow
    decision: KDecision
    result: CycleResult
    started_s: float = 0.0
    sync_wait_ms: float = 0.0
    path_updated: bool = False
    loop_events: tuple[PipelineEvent, ...] = ()


class ReconstructionSession:
    """Frames in, cycles out (see the module docstring).

    ``params``: checked settings (:func:`~dvlt_ros.pipeline.settings.load_parameters` or
    the node's declared parameters). ``keep_all_poses``: keep every camera's pose of the
    run (offline TUM files) besides the bounded reference path. ``fused``: accumulate the
    newest views of every cycle into this cloud. ``checkpoint_required=False``: the
    backend is given by the caller and the checkpoint only labels it (may be empty).
    ``on_accept`` sees every frame the synchroniser queues. ``transforms``: the robot's TF
    (needed by ``scale_source`` rig, odometry, auto and ``anchor: tf``; without it those
    report ``tf_unavailable`` and the output stays up to scale). ``describer``: place
    descriptors of keyframe images for a backend that gives none; ``map_cloud``: the
    loop-corrected map cloud (default from ``map_voxel`` and ``map_max_points``).
    """

    def __init__(
        self,
        params: Mapping[str, ParamValue],
        *,
        metric_scale: MetricScale | None = None,
        keep_all_poses: bool = False,
        fused: FusedCloud | None = None,
        checkpoint_required: bool = True,
        on_accept: Callable[[CameraFrame], None] | None = None,
        transforms: TransformLookup | None = None,
        describer: Describer | None = None,
        map_cloud: FusedCloud | None = None,
    ) -> None:
        self.params: dict[str, ParamValue] = dict(params)
        p = self.params
        self.cameras = tuple(camera_label(ns) for ns in p["cameras"])
        self.checkpoint_required = checkpoint_required
        self._lock = threading.Lock()
        self._pending: dict[str, ParamValue] = {}
        self.sync = RigSynchronizer(configs.sync_config(p), on_accept)
        self.windows = WindowSelector(configs.window_config(p))
        self.k_policy = KPolicy(configs.k_policy_config(p))
        self.pipeline: ReconstructionPipeline | None = None
        self._metric_scale = metric_scale
        self.transforms = transforms
        self.grounding_config = configs.grounding_config(p)
        self._depths: dict[str, deque[tuple[int, MeasuredDepth]]] = {
            camera: deque(maxlen=DEPTH_QUEUE) for camera in self.cameras}
        self._depth_warned: set[str] = set()
        self.lossless_queue: deque[tuple[RigSnapshot | None, int]] = deque(
            maxlen=LOSSLESS_QUEUE)
        self.images_received = 0
        self.trajectories = Trajectories(int(p["trajectory_length"]), keep_all=keep_all_poses)
        self.fused = fused
        self.describer = describer
        self.map_cloud = map_cloud or FusedCloud(float(p["map_voxel"]),
                                                 int(p["map_max_points"]))
        self.loop_map: LoopMap | None = None
        #: The maps of earlier world epochs (kept with ``keep_all_poses``, for offline files).
        self.past_maps: dict[int, LoopMap] = {}
        self._loop_state = "on" if p["loop_closure"] else "off"
        self.cycles = 0
        self.last_report: CycleReport | None = None
        #: torch's intra-op threads during the last :meth:`reconstruct` (None before one).
        self.torch_threads: int | None = None

    # ----------------------------------------------------------------- settings
    def propose(self, changes: Mapping[str, ParamValue]) -> str | None:
        """Why ``changes`` are refused (a value alone, or with every value accepted so
        far), or None: then they apply at the next :meth:`apply_pending`."""
        problem = check_values(changes.items(), checkpoint_required=self.checkpoint_required)
        if problem:
            return problem
        # Under the lock, so that the cycle cannot apply pending changes between this check
        # and the update (the check must see every accepted value).
        with self._lock:
            problem = check_combination({**self.params, **self._pending, **changes})
            if problem is None:
                self._pending.update(changes)
        return problem

    def apply_pending(self) -> dict[str, ParamValue]:
        """Apply the changes accepted since the last call (cycle thread); returns them."""
        with self._lock:
            changes, self._pending = self._pending, {}
            self.params.update(changes)
        if changes:
            self.k_policy.update(**asdict(configs.k_policy_config(self.params)))
            if self.pipeline is not None:
                self.pipeline.config = configs.pipeline_config(self.params)
        return changes

    # ----------------------------------------------------------------- model
    def install_backend(self, backend: InferenceBackend) -> list[PipelineEvent]:
        """Make ``backend`` the one cycles run on; a replaced one starts a new world."""
        if self.pipeline is not None:
            self.trajectories.reset_path()
        self.loop_map = None
        self.pipeline = ReconstructionPipeline(
            backend, configs.pipeline_config(self.params),
            world=configs.world_config(self.params), metric_scale=self._metric_scale,
            grounding=self.grounding_config, transforms=self.transforms,
        )
        with self._lock:  # arrivals are checked against this model's input size
            events = self.sync.set_img_size(self.pipeline.reconstructor.img_size)
        self.k_policy.model.reset()
        return events

    # ----------------------------------------------------------------- inputs
    def add_frame(self, frame: CameraFrame, now_ns: int) -> list[PipelineEvent]:
        """Queue a frame that arrived at ``now_ns`` (the clock of every ``now_ns``)."""
        with self._lock:
            return self.sync.add(frame, now_ns)

    def add_depth(self, camera: str, stamp_ns: int, depth: MeasuredDepth) -> list[PipelineEvent]:
        """Keep a depth image of ``camera`` (its label) stamped ``stamp_ns`` for the window
        holding that camera's image of the same stamp (within ``sync_slop``; nearest wins).

        Registered depth (``depth.k`` None) is the colour image's pixels at any size of the
        same aspect; otherwise ``depth.k`` is the depth image's intrinsics and
        ``depth.colour_from_depth`` the depth optical frame in the colour optical frame
        (the caller looks it up, e.g. TF ``<image frame_id> -> <depth frame_id>``). Ignored
        unless ``scale_source`` is depth or auto. Thread-safe; at most ``DEPTH_QUEUE`` per
        camera are kept."""
        if not self.grounding_config.uses_depth:
            return []
        with self._lock:
            queue = self._depths.get(camera)
            if queue is None:
                if camera in self._depth_warned:
                    return []
                self._depth_warned.add(camera)
                return [PipelineEvent(
                    "depth_rejected", Level.WARN,
                    f"depth images of camera {camera!r} are ignored; configured cameras: "
                    f"{', '.join(self.cameras)}", camera)]
            queue.append((int(stamp_ns), depth))
        return []

    def _matched_depths(self, window: ViewWindow) -> list[MeasuredDepth | None] | None:
        """The depth image of each view of ``window`` (nearest stamp within the slop)."""
        if not self.grounding_config.uses_depth:
            return None
        slop = self.grounding_config.depth_slop_ns
        matched: list[MeasuredDepth | None] = []
        with self._lock:
            for frame in window.frames:
                candidates = [(abs(stamp - frame.stamp_ns), i, depth) for i, (stamp, depth)
                              in enumerate(self._depths.get(frame.camera, ()))
                              if abs(stamp - frame.stamp_ns) <= slop]
                matched.append(min(candidates, key=lambda c: c[:2])[2] if candidates else None)
        return matched

    def count_rejected(self, camera: str) -> None:
        """Count an image of ``camera`` refused before it became a frame."""
        with self._lock:
            self.sync.count_rejected(camera)

    def poll(self, now_ns: int) -> tuple[RigSnapshot | None, list[PipelineEvent]]:
        """The newest complete snapshot (consumed), or None; plus time-out events."""
        with self._lock:
            return self.sync.poll(now_ns)

    def after_image(self, now_ns: int) -> list[PipelineEvent]:
        """Lossless mode, after each image message (used or rejected): queue the snapshot
        it completed (or None) with the image count, to reconstruct and acknowledge in
        order. A full queue drops its oldest entry (reported)."""
        with self._lock:
            self.images_received += 1
            snapshot, events = self.sync.poll(now_ns)
            queue = self.lossless_queue
            if len(queue) == queue.maxlen and queue[0][0] is not None:
                events.append(PipelineEvent(
                    "queue_overflow", Level.WARN,
                    f"lossless queue full ({queue.maxlen} images): the oldest snapshot was "
                    "dropped; lossless mode is for `dvlt-ros replay --lossless`, which "
                    "waits for each acknowledgement",
                ))
            queue.append((snapshot, self.images_received))
        return events

    def next_queued(self) -> tuple[RigSnapshot | None, int] | None:
        """The oldest lossless entry (snapshot or None, image count), or None if empty."""
        with self._lock:
            return self.lossless_queue.popleft() if self.lossless_queue else None

    def camera_stats(self) -> dict[str, CameraStats]:
        with self._lock:
            return self.sync.stats()

    # ----------------------------------------------------------------- cycle
    def reconstruct(self, snapshot: RigSnapshot, now_ns: int) -> ReconstructedSnapshot:
        """Window ``snapshot``, choose K, reconstruct, and add the result to the
        trajectories and the fused cloud, with ``torch_threads`` intra-op threads on the
        calling thread. A snapshot whose reconstruction raises is never kept as a keyframe
        (the exception propagates)."""
        if self.pipeline is None:
            raise RuntimeError("no backend installed: call install_backend first")
        with torch_threads(int(self.params["torch_threads"])) as threads:
            self.torch_threads = threads
            return self._reconstruct(snapshot, now_ns)

    def _reconstruct(self, snapshot: RigSnapshot, now_ns: int) -> ReconstructedSnapshot:
        started = time.perf_counter()
        arrived = snapshot.arrived_ns
        sync_wait_ms = max(0, now_ns - arrived) / 1e6 if arrived is not None else 0.0
        window = self.windows.select(snapshot)
        decision = self.k_policy.choose(len(window))
        try:
            result = self.pipeline.submit(window, decision.num_steps,
                                          self._matched_depths(window))
        except Exception:
            self.windows.forget(snapshot)
            raise
        path_updated = self.trajectories.add_cycle(result)
        if self.fused is not None:
            newest = [i for i, step in enumerate(window.timesteps) if step == 0]
            cloud = build_cloud(result.reconstruction, result.placement.world_from_window,
                                self.pipeline.config.cloud, newest)
            self.fused.add(result.epoch, cloud.points, cloud.colors, cloud.confidence)
        loop_events = self._add_keyframe(window, result)
        return ReconstructedSnapshot(window, decision, result, started, sync_wait_ms,
                                     path_updated, loop_events)

    # ----------------------------------------------------------------- loop closure
    def _add_keyframe(self, window: ViewWindow, result: CycleResult) -> tuple[PipelineEvent, ...]:
        """The window's newest snapshot into the map (a new map for a new world epoch)."""
        if self._loop_state != "on":
            return ()
        if self.loop_map is None or self.loop_map.epoch != result.epoch:
            if self.loop_map is not None and self.trajectories.keep_all:
                self.past_maps[self.loop_map.epoch] = self.loop_map
            try:
                self.loop_map = LoopMap(
                    self.pipeline.reconstructor, result.epoch, self.map_cloud,
                    self.pipeline.config.cloud, self.describer, configs.loop_options(self.params),
                    known_intrinsics=self.pipeline.config.use_input_camera_info,
                    path_length=int(self.params["trajectory_length"]),
                    keep_all=self.trajectories.keep_all)
            except ImportError as exc:  # GTSAM missing
                return self._loop_unavailable(PipelineEvent(
                    UNAVAILABLE, Level.WARN, f"loop closure is off: {exc}"))
        odom_from_camera = None
        if self.transforms is not None:
            reference = window.frames[window.timesteps.index(0)]
            odom_from_camera = odometry_camera_pose(
                self.transforms, self.grounding_config, reference.camera, reference.frame_id,
                reference.stamp_ns)
        events = self.loop_map.add(window, result, odom_from_camera)
        if any(e.code == UNAVAILABLE for e in events):
            return self._loop_unavailable(*events)
        return tuple(events)

    def _loop_unavailable(self, *events: PipelineEvent) -> tuple[PipelineEvent, ...]:
        self._loop_state = "unavailable"
        self.loop_map = None
        return events

    def maps(self) -> list[LoopMap]:
        """The maps of this run, oldest first (earlier epochs only with keep_all_poses)."""
        current = [] if self.loop_map is None else [self.loop_map]
        return [*self.past_maps.values(), *current]

    def close_loops(self, limit: int | None = None) -> list[LoopVerdict]:
        """Verify up to ``limit`` (default ``loop_verify_per_cycle``) loop candidates, in the
        spare time after a cycle; after an accepted loop the map cloud is re-placed."""
        if self.loop_map is None:
            return []
        limit = int(self.params["loop_verify_per_cycle"]) if limit is None else limit
        with torch_threads(int(self.params["torch_threads"])):
            return self.loop_map.close_loops(limit)

    def reset_map(self) -> None:
        """Forget the keyframe graph, the loops and the map cloud (the next window starts a
        new map; the chained world goes on)."""
        self.loop_map = None
        self.past_maps.clear()
        self.map_cloud.clear()
        if self._loop_state == "unavailable":
            self._loop_state = "on"

    @property
    def loop_stats(self) -> LoopStats:
        """The map's counts and timings (state off or unavailable without a map)."""
        if self.loop_map is None:
            return LoopStats(self._loop_state)
        return self.loop_map.stats()

    def map_from_world(self) -> np.ndarray | None:
        """The rigid ``map_frame -> world_frame`` transform (4x4) for TF, or None without a
        map."""
        return None if self.loop_map is None else self.loop_map.map_from_world_tf()

    def map_path(self) -> list[tuple[int, np.ndarray]]:
        """The reference camera's corrected keyframe poses (stamp ns, map_from_camera),
        the last ``trajectory_length``."""
        if self.loop_map is None:
            return []
        return self.loop_map.path(self.cameras[0], int(self.params["trajectory_length"]))

    def finish(self, cycle: ReconstructedSnapshot, publish_ms: float, points: int,
               overruns: int = 0) -> CycleReport:
        """Close a cycle whose products took ``publish_ms`` to publish or write: feed the
        K policy and return the cycle's report (also kept as ``last_report``)."""
        total_ms = (time.perf_counter() - cycle.started_s) * 1e3
        result, decision, window = cycle.result, cycle.decision, cycle.window
        self.k_policy.observe(len(window), result.backend_timings,
                              result.timings.post_ms + publish_ms)
        self.cycles += 1
        b = result.backend_timings
        stages = {**result.timings.as_dict(), "publish_ms": publish_ms, "total_ms": total_ms}
        report = CycleReport(
            cycle=self.cycles, stamp_ns=result.stamp_ns, epoch=result.epoch,
            num_steps=result.num_steps, num_steps_mode=decision.mode,
            predicted_ms=decision.predicted_ms, num_views=result.num_views,
            num_cameras=len(window.newest), num_timesteps=max(window.timesteps) + 1,
            points=points, units=result.units, sync_wait_ms=cycle.sync_wait_ms, **stages,
            encode_ms=b.encode_ms, decode_ms=b.decode_ms,
            step_ms=sum(b.step_ms) / len(b.step_ms) if b.step_ms else 0.0,
            drops=sum(s.dropped for s in self.camera_stats().values()), overruns=overruns,
            **self._grounding_fields(result), **self._loop_fields(),
        )
        self.last_report = report
        return report

    def _loop_fields(self) -> dict[str, object]:
        stats = self.loop_stats
        return {f"loop_{k}" if k != "state" else "loop_closure": v
                for k, v in asdict(stats).items()}

    @staticmethod
    def _grounding_fields(result: CycleResult) -> dict[str, object]:
        g = result.grounding
        if g is None:
            return {"metric": result.metric}
        return {
            "metric": result.metric, "metres_per_unit": g.metres_per_unit,
            "scale_source": g.source, "scale_spread": g.spread,
            "scale_constraints": g.constraints, "anchor": g.anchor, "grounding": g.summary,
            "tf_ms": g.tf_ms,
        }
