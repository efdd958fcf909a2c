"""``dvlt-ros process``: a rosbag2 in, reconstruction outputs out, without DDS.

The bag's camera messages are decoded like the node's subscriptions do
(:mod:`dvlt_ros.bags.decode`) and fed, in log-time order, to the node's
:class:`~dvlt_ros.pipeline.session.ReconstructionSession`, driven as the node drives it in
lossless mode (every snapshot reconstructed). Each cycle's products and diagnostics are
written by the node's own :class:`~dvlt_ros.node_support.outputs.OutputPublishers` and
diagnostics builder into an mcap bag (through :class:`~dvlt_ros.bags.writer.RecordingNode`),
at the source stamps. At the end: the session's fused cloud as ``.ply``, its trajectories
as one TUM file per camera, an optional evaluation, and ``summary.json``.

With ``loop_closure`` (on by default for ``dvlt-ros process``), loop candidates are
verified after each snapshot's outputs are written (``loop_verify_per_cycle`` per
snapshot, as the node does in its spare time), and the end adds the loop-corrected
trajectories (``trajectory_<camera>_optimised.tum``), the re-placed map cloud
(``cloud_optimised.ply``) and, with ground truth, the ATE of both the chained and the
optimised trajectories (``evaluation`` and ``ground_truth``).

Grounding (docs/world_frame.md): the bag's ``/tf_static`` (read first, whole) and ``/tf``
are the robot's TF (:class:`~dvlt_ros.bags.tf_feed.BagTransforms`), given to the session
as ``transforms``; with ``scale_source`` depth or auto, each camera's ``<ns>/<depth_topic>``
goes to :meth:`~dvlt_ros.pipeline.session.ReconstructionSession.add_depth`. TF and depth are
recorded slightly after the images they belong to, so a snapshot is reconstructed once every
time-stamped TF edge and every depth stream has reached its stamp, at most
:data:`~dvlt_ros.bags.tf_feed.LOOKAHEAD_NS` of log time later (then the laggards are
reported stale), or at the bag's end. A sample bag also gets ``ground_truth.tum``: the
reference camera's true optical-frame poses in the output world frame; any other bag with
a ground-truth TF topic gets it from that TF (in its root frame). Output files
appear atomically (:class:`~dvlt_ros.bags.staged_output.StagedOutput`); an interruption
(``stop()``, e.g. on SIGINT) or a damaged bag ends the run early, and what was
reconstructed until then is finalised and kept.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from dvlt_core.backends import InferenceBackend
from dvlt_core.geometry import TfTree, TransformError
from dvlt_core.io.writers import write_tum
from dvlt_core.mapping.loop_closer import Describer
from dvlt_ros.bags.decode import CameraTopics, FrameDecoder, camera_topics
from dvlt_ros.bags.evaluation import Evaluation, evaluate, read_tum, tum_lookup
from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.msgtypes import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, TF_MESSAGE
from dvlt_ros.bags.sample import (
    ODOM_FRAME,
    SCENE_TOPIC,
    ground_truth_in_world,
    read_sample_config,
)
from dvlt_ros.bags.source import BagSource
from dvlt_ros.bags.staged_output import StagedOutput
from dvlt_ros.bags.streams import StreamMonitor
from dvlt_ros.bags.tf_feed import LOOKAHEAD_NS, TF_STATIC_TOPIC, TF_TOPIC, BagTransforms
from dvlt_ros.bags.viewer_exports import BagViewerExports
from dvlt_ros.bags.writer import BagWriter, RecordingNode
from dvlt_ros.conversions.tf import ns_from_stamp, stamp_from_ns
from dvlt_ros.node_support import diagnostics as diag
from dvlt_ros.node_support.depth import (
    DepthConversionError,
    check_depth_image,
    depth_info_topic,
    measured_depth,
)
from dvlt_ros.node_support.health import LEVELS, Problem
from dvlt_ros.node_support.outputs import OutputPublishers
from dvlt_ros.pipeline import Level, MetricScale, PipelineEvent
from dvlt_ros.pipeline.accumulate import FusedCloud, epoch_suffix
from dvlt_ros.pipeline.events import loop_closure_error
from dvlt_ros.pipeline.session import ReconstructedSnapshot, ReconstructionSession
from dvlt_ros.pipeline.settings import NODE_NAME
from dvlt_ros.pipeline.sync import RigSnapshot

OUTPUT_BAG = "reconstruction"
SUMMARY = "summary.json"
STAGES = ("preprocess_ms", "inference_ms", "pose_fit_ms", "world_ms", "products_ms",
          "write_ms", "total_ms")


@dataclass(frozen=True)
class GroundTruth:
    """Where the ground truth for evaluation comes from: a TF topic of the bag (chained with
    the bag's ``/tf_static``) or TUM files per camera; ``align``: ``sim3`` or ``se3``."""

    tf_topic: str | None = None
    tum_files: Mapping[str, Path] = field(default_factory=dict)
    align: str = "sim3"
    tolerance_ns: int = 1_000_000


@dataclass(frozen=True)
class ProcessOptions:
    """Output settings: ``fuse_voxel`` (world units; 0 keeps every point) and
    ``fuse_max_points`` (above it the voxel doubles, so memory stays bounded), ``storage`` of
    the output bag, ``node_name`` for the output topics (``/<node_name>/points``, ...)."""

    fuse_voxel: float = 0.02
    fuse_max_points: int = 4_000_000
    storage: str = "mcap"
    node_name: str = NODE_NAME
    overwrite: bool = False
    ground_truth: GroundTruth | None = None
    glb: bool = False  # scene.glb (dvlt_ros.bags.viewer_exports)
    rrd: bool = False  # recording.rrd


@dataclass
class _Stats:
    frames_read: int = 0
    images_total: int = 0
    windows: int = 0
    first_output_s: float | None = None
    k_values: Counter = field(default_factory=Counter)
    views: Counter = field(default_factory=Counter)
    timings: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    events: Counter = field(default_factory=Counter)
    first_rejection: str | None = None
    failed_windows: int = 0
    scale_sources: Counter = field(default_factory=Counter)
    anchors: Counter = field(default_factory=Counter)
    metres_per_unit: list[float] = field(default_factory=list)
    first_unscaled: str | None = None


@dataclass(frozen=True)
class _DepthTopics:
    """A camera's depth image topic and its CameraInfo."""

    camera: str
    image: str
    info: str


class BagProcessor:
    """Process one bag (see the module docstring). ``log(level, text)`` receives messages
    for the user; ``progress(done, total, windows)`` is called after each image;
    ``describer``: place descriptors for a backend that gives none (loop closure)."""

    def __init__(
        self,
        bag: BagSource,
        backend: InferenceBackend,
        params: Mapping[str, object],
        out_dir: str | Path,
        options: ProcessOptions | None = None,
        *,
        issues: IssueLog | None = None,
        metric_scale: MetricScale | None = None,
        log: Callable[[str, str], None] | None = None,
        progress: Callable[[int, int, int], None] | None = None,
        describer: Describer | None = None,
    ) -> None:
        self.bag = bag
        self.params = dict(params)
        self.options = options or ProcessOptions()
        self.issues = issues or bag.issues
        self._log = log or (lambda level, text: None)
        self._progress = progress
        self.topics = self._check_topics()
        self._image_topics = {t.camera: t.image for t in self.topics}
        self.tf = BagTransforms(self.issues)
        self.session = ReconstructionSession(
            self.params, metric_scale=metric_scale, keep_all_poses=True,
            fused=FusedCloud(self.options.fuse_voxel, self.options.fuse_max_points),
            on_accept=self._on_accept, transforms=self.tf.tree, describer=describer,
            map_cloud=FusedCloud(self.options.fuse_voxel or float(self.params["map_voxel"]),
                                 self.options.fuse_max_points))
        grounding = self.session.grounding_config
        self._tf_topics = self._check_tf(grounding.uses_transforms)
        self.depth_topics = self._check_depth() if grounding.uses_depth else []
        self._depth_newest: dict[str, int] = {}
        self._depth_infos: dict[str, CameraInfo] = {}
        self._stale_depth: set[str] = set()
        self._pending: deque[tuple[RigSnapshot, int]] = deque()
        self.fused, self.trajectories = self.session.fused, self.session.trajectories
        self._backend = backend
        self.decoder = FrameDecoder(bool(self.params["use_input_camera_info"]),
                                    int(self.params["max_pixels"]))
        self.monitor = StreamMonitor(self.issues,
                                     jump_threshold_ns=round(
                                         float(self.params["time_jump_threshold"]) * 1e9))
        self.viewers = BagViewerExports(self.session.cameras, self.options.glb,
                                        self.options.rrd)
        self.output = StagedOutput(out_dir, overwrite=self.options.overwrite)
        self._stop_requested = False
        self.stats = _Stats()
        self.frame_ids: dict[str, str] = {}
        #: camera -> (optical frame, (width, height)) of its latest image, for depth.

    # ------------------------------------------------------------------ checks
    def _check_topics(self) -> list[CameraTopics]:
        transport = str(self.params["image_transport"])
        wanted = COMPRESSED_IMAGE if transport == "compressed" else IMAGE
        topics = [camera_topics(ns, transport) for ns in self.params["cameras"]]
        images = sorted(t.name for t in self.bag.topics.values() if t.msgtype in
                        (IMAGE, COMPRESSED_IMAGE))
        missing = [t.image for t in topics if t.image not in self.bag.topics]
        if missing:
            other = "raw" if transport == "compressed" else "compressed"
            hint = "" if not any(camera_topics(ns, other).image in self.bag.topics
                                 for ns in self.params["cameras"]) else (
                f" (the bag has the {other} images: set image_transport:={other})")
            raise BagError(
                f"camera topic(s) {', '.join(missing)} are not in {self.bag.path}; its image "
                f"topics are: {', '.join(images) or 'none'}{hint}. Name the cameras with "
                "--cameras (namespaces: <ns>/image_raw) or rename topics with --remap FROM:=TO"
            )
        for t in topics:
            found = self.bag.topics[t.image].msgtype
            if found != wanted:
                raise BagError(
                    f"{t.image} has type {found}, expected {wanted} for image_transport "
                    f"'{transport}' (use image_transport:=compressed for CompressedImage)")
            if self.bag.topics[t.image].count == 0:
                self.issues.warn("empty_topic", "no messages recorded", t.image)
            elif (problem := self.bag.topic_problem(t.image)) is not None:
                raise BagError(f"{t.image} cannot be used: {problem}")
            info = self.bag.topics.get(t.info)
            if info is None:
                if self.params["use_input_camera_info"]:
                    self.issues.warn("missing_camera_info",
                                     f"{t.info} is not in the bag: the predicted intrinsics are "
                                     "used for this camera", t.image)
            elif info.msgtype != CAMERA_INFO:
                self.issues.warn("unknown_type",
                                 f"{t.info} has type {info.msgtype}, not {CAMERA_INFO}: ignored",
                                 t.info)
        return topics

    def _check_tf(self, needed: bool) -> list[str]:
        """The TF topics to read (``/tf_static`` first); warn when grounding needs TF the
        bag does not have or cannot give."""
        usable = []
        for topic in (TF_STATIC_TOPIC, TF_TOPIC):
            info = self.bag.topics.get(topic)
            if info is None:
                continue
            if info.msgtype != TF_MESSAGE:
                self.issues.warn("unknown_type", f"{topic} has type {info.msgtype}, not "
                                 f"{TF_MESSAGE}: ignored", topic)
            elif (problem := self.bag.topic_problem(topic)) is not None:
                self.issues.warn("tf_invalid", f"{topic} cannot be used: {problem}", topic)
            else:
                usable.append(topic)
        if not needed:
            return []
        cfg = self.session.grounding_config
        wanted = []
        if cfg.anchor == "tf" or {"rig", "odometry"} & set(cfg.sources):
            if "rig" in cfg.sources or cfg.anchor == "tf":
                wanted.append((TF_STATIC_TOPIC, f"the rig's mounts ({cfg.base_frame} -> the "
                               "image frame_ids)"))
            if "odometry" in cfg.sources or cfg.anchor == "tf":
                wanted.append((TF_TOPIC, f"the robot's motion ({cfg.odom_frame} -> "
                               f"{cfg.base_frame})"))
        for topic, what in wanted:
            if topic not in usable:
                self.issues.warn("missing_tf", f"scale_source {cfg.scale_source} / anchor "
                                 f"{cfg.anchor} looks up {what} on {topic}, which the bag "
                                 "does not have: those windows stay up to scale or in the "
                                 "chain (see summary.json grounding)", topic)
        return usable

    def _check_depth(self) -> list[_DepthTopics]:
        """Each camera's depth topic (``<ns>/<depth_topic>``) and its CameraInfo."""
        relative = str(self.params["depth_topic"]).strip("/")
        info_relative = depth_info_topic(relative)
        found = []
        for namespace, camera in zip(self.params["cameras"], self.session.cameras,
                                     strict=True):
            base = "/" + str(namespace).strip("/")
            topics = _DepthTopics(camera, f"{base}/{relative}", f"{base}/{info_relative}")
            info = self.bag.topics.get(topics.image)
            if info is None:
                self.issues.warn("missing_depth", f"{topics.image} is not in the bag: camera "
                                 f"{camera} gives no depth scale", topics.image)
            elif info.msgtype != IMAGE:
                self.issues.warn("unknown_type", f"{topics.image} has type {info.msgtype}, "
                                 f"not {IMAGE} (16UC1 mm or 32FC1 m): ignored", topics.image)
            elif info.count and (problem := self.bag.topic_problem(topics.image)) is not None:
                self.issues.warn("depth_rejected", f"{topics.image} cannot be used: {problem}",
                                 topics.image)
            else:
                found.append(topics)
        return found

    # ------------------------------------------------------------------ run
    def stop(self) -> None:
        """Ask the run to end after the current cycle (signal-handler safe)."""
        self._stop_requested = True

    def run(self) -> dict[str, object]:
        """Process the bag; returns the summary (also written to ``summary.json``)."""
        start = time.perf_counter()
        writer = BagWriter(self.output.path(OUTPUT_BAG), self.options.storage)
        recorder = RecordingNode(writer, self.options.node_name)
        publishers = OutputPublishers(recorder, list(self.session.cameras),
                                      str(self.params["world_frame"]))
        error: str | None = None
        try:
            for event in self.session.install_backend(self._backend):
                self._report(event)
            self._loop(start, recorder, publishers)
        except BagError as exc:
            error = str(exc)
        except Exception as exc:  # keep what was made, then report the failure
            error = f"{type(exc).__name__}: {exc}"
            self._log("error", f"processing failed: {error}")
        except BaseException:  # a second Ctrl-C: abort, leave nothing behind
            writer.close()
            self.viewers.abort()
            self.output.discard()
            raise
        finally:
            writer.close()
        summary = self._finish(start, writer, error)
        return summary

    def _loop(self, start: float, recorder: RecordingNode,
              publishers: OutputPublishers) -> None:
        by_image = {t.image: t for t in self.topics}
        by_info = {t.info: t for t in self.topics if t.info in self.bag.topics
                   and self.params["use_input_camera_info"]}
        self.stats.images_total = sum(self.bag.topics[t].count for t in by_image)
        names = list(by_image) + [t for t in by_info
                                  if self.bag.topics[t].msgtype == CAMERA_INFO]
        depth_images = {t.image: t for t in self.depth_topics}
        depth_infos = {t.info: t for t in self.depth_topics
                       if self.bag.topics.get(t.info) is not None
                       and self.bag.topics[t.info].msgtype == CAMERA_INFO}
        names += [*depth_images, *depth_infos]
        if TF_STATIC_TOPIC in self._tf_topics:  # static: all of it before the first image
            for message in self.bag.messages([TF_STATIC_TOPIC]):
                self.tf.add(message.raw, True, message.topic, message.log_ns)
        if TF_TOPIC in self._tf_topics:
            names.append(TF_TOPIC)
        log_ns = 0
        for message in self.bag.messages(names):
            log_ns = message.log_ns
            if message.topic == TF_TOPIC:
                self.tf.add(message.raw, False, message.topic, message.log_ns)
            elif message.topic in depth_infos:
                info = deserialize_message(message.raw, CameraInfo)
                self._depth_infos[depth_infos[message.topic].camera] = info
            elif message.topic in depth_images:
                self._add_depth(depth_images[message.topic], message.raw, message.log_ns)
            if message.topic not in by_image:
                if message.topic in by_info:
                    self.decoder.camera_info(by_info[message.topic].camera, message.raw)
                self._drain(message.log_ns, start, recorder, publishers)
                if self._stop_requested:
                    return
                continue
            camera = by_image[message.topic]
            self.stats.frames_read += 1
            frame, events = self.decoder.image(camera.camera, message.raw, camera.compressed)
            for event in events:
                self._report(event)
            if frame is None:
                self.session.count_rejected(camera.camera)
            else:
                self.frame_ids.setdefault(frame.camera, frame.frame_id)
                for ev in self.session.add_frame(frame, message.log_ns):
                    self._report(ev)
            for ev in self.session.after_image(message.log_ns):
                self._report(ev)
            while (item := self.session.next_queued()) is not None:
                if item[0] is not None:
                    self._pending.append((item[0], message.log_ns))
            self._drain(message.log_ns, start, recorder, publishers)
            if self._progress is not None:
                self._progress(self.stats.frames_read, self.stats.images_total,
                               self.stats.windows)
            if self._stop_requested:
                return
        self._drain(log_ns, start, recorder, publishers, final=True)

    def _drain(self, log_ns: int, start: float, recorder: RecordingNode,
               publishers: OutputPublishers, final: bool = False) -> None:
        """Reconstruct the held snapshots, oldest first, whose TF and depth have arrived
        (or waited :data:`LOOKAHEAD_NS`, or ``final``: the bag ended)."""
        while self._pending and not self._stop_requested:
            snapshot, queued_ns = self._pending[0]
            waited_out = final or log_ns - queued_ns > LOOKAHEAD_NS
            if not waited_out and self._waiting(snapshot.stamp_ns):
                return
            self._pending.popleft()
            if waited_out:
                self._warn_stale(snapshot.stamp_ns, log_ns)
            try:
                cycle = self.session.reconstruct(snapshot, log_ns)
            except Exception as exc:  # like the live node: report, keep going
                self.stats.failed_windows += 1
                self._report(PipelineEvent(
                    "cycle_error", Level.ERROR,
                    f"the window at {snapshot.stamp_ns * 1e-9:.3f} s failed: "
                    f"{type(exc).__name__}: {exc}", stamp_ns=snapshot.stamp_ns))
                continue
            self._write_cycle(cycle, start, recorder, publishers)

    def _waiting(self, stamp_ns: int) -> bool:
        """Whether TF or depth that a window at ``stamp_ns`` may need is still to come."""
        if TF_TOPIC in self._tf_topics and self.bag.topics[TF_TOPIC].count and (
                not self.tf.has_dynamic or self.tf.lag(stamp_ns)):
            return True
        return any(self.bag.topics[t.image].count and self._depth_newest.get(
            t.camera, -1) < stamp_ns for t in self.depth_topics)

    def _warn_stale(self, stamp_ns: int, log_ns: int) -> None:
        self.tf.warn_stale(stamp_ns, log_ns)
        for topics in self.depth_topics:
            newest = self._depth_newest.get(topics.camera)
            if topics.camera in self._stale_depth or (newest is not None and newest >= stamp_ns):
                continue
            self._stale_depth.add(topics.camera)
            since = "none was read" if newest is None else f"the last is at {newest * 1e-9:.3f} s"
            self.issues.warn("depth_stale", f"no depth image for the snapshot at "
                             f"{stamp_ns * 1e-9:.3f} s ({since}): camera {topics.camera} gives "
                             "no depth scale there", topics.image, log_ns)

    def _add_depth(self, topics: _DepthTopics, raw: bytes, log_ns: int) -> None:
        """One depth image to the session, converted by the node's rules
        (:func:`dvlt_ros.node_support.depth.measured_depth`: registered, or reprojected with
        its CameraInfo and TF)."""
        msg = deserialize_message(raw, Image)
        stamp_ns = ns_from_stamp(msg.header.stamp)
        if stamp_ns > 0:  # the snapshots up to here need not wait for depth any longer
            self._depth_newest[topics.camera] = max(
                self._depth_newest.get(topics.camera, stamp_ns), stamp_ns)
        try:
            check_depth_image(msg, self.decoder.max_pixels)
            colour = self.decoder.colour_view(topics.camera)
            if colour is None:
                raise DepthConversionError(f"no image of {topics.camera} was read before it")
            depth = measured_depth(msg, self._depth_infos.get(topics.camera), *colour,
                                   self.tf.tree)
        except Exception as exc:  # like the node: refuse this image, keep going
            reason = str(exc) if isinstance(exc, DepthConversionError) else (
                f"{type(exc).__name__}: {exc}")
            self.issues.warn("depth_rejected", f"depth image at {stamp_ns * 1e-9:.3f} s: "
                             f"{reason}; this camera gives no depth scale until one is usable",
                             topics.image, log_ns)
            return
        for event in self.session.add_depth(topics.camera, stamp_ns, depth):
            self._report(event)

    def _write_cycle(self, cycle: ReconstructedSnapshot, start: float, recorder: RecordingNode,
                     publishers: OutputPublishers) -> None:
        result = cycle.result
        if cycle.decision.event is not None:
            self._report(cycle.decision.event)
        for event in (*result.events, *cycle.loop_events):
            self._report(event)
        write_start = time.perf_counter()
        recorder.set_stamp(result.stamp_ns)
        path = self.trajectories.path if cycle.path_updated else None
        points = publishers.publish(result, path)
        self.viewers.add(result, self.output)
        write_ms = (time.perf_counter() - write_start) * 1e3
        self.session.finish(cycle, write_ms, points)
        recorder.writer.write("/diagnostics", self._diagnostics(cycle), result.stamp_ns)
        try:
            self.session.close_loops()
        except Exception as exc:  # like a failed window: report, keep going
            self._report(loop_closure_error(exc, result.stamp_ns))
        stats = self.stats
        stats.windows += 1
        if stats.first_output_s is None:
            stats.first_output_s = time.perf_counter() - start
        stats.k_values[result.num_steps] += 1
        stats.views[result.num_views] += 1
        grounding = result.grounding
        if grounding is not None:
            stats.scale_sources[grounding.source if grounding.metric else "none"] += 1
            stats.anchors[grounding.anchor] += 1
            if grounding.metric:
                stats.metres_per_unit.append(grounding.metres_per_unit)
            elif stats.first_unscaled is None:
                stats.first_unscaled = grounding.summary
        timings = {**result.timings.as_dict(), "write_ms": write_ms}
        timings["total_ms"] += write_ms
        for stage in STAGES:
            stats.timings[stage].append(timings[stage])

    def _on_accept(self, frame) -> None:
        """Stamp checks of the bag's streams see the frames the synchroniser queues (not
        those it refuses as outliers)."""
        self.monitor.check(self._image_topics[frame.camera], frame.stamp_ns)

    def _report(self, event: PipelineEvent) -> None:
        self.stats.events[event.code] += 1
        if self.stats.first_rejection is None and _is_rejection(event):
            self.stats.first_rejection = str(event)
        if event.level >= Level.WARN and self.stats.events[event.code] <= 3:
            self._log("warning" if event.level == Level.WARN else "error", str(event))

    def _diagnostics(self, cycle: ReconstructedSnapshot):
        """The node's diagnostics of this cycle; problems: the cycle's own warnings."""
        result = cycle.result
        name = f"/{self.options.node_name}"
        values = {**diag.pipeline_values(self.session), "model": self._backend.name,
                  "mode": "offline (dvlt-ros process)"}
        problems = [Problem(e.camera or "pipeline", e.code, LEVELS[e.level], e.message,
                            0.0, None)
                    for e in result.events if e.level >= Level.WARN]
        statuses = diag.session_statuses(
            name, self.session, values,
            lambda source: problems if source == "pipeline" else [])
        return diag.diagnostic_array(stamp_from_ns(result.stamp_ns), statuses)

    # ------------------------------------------------------------------ finish
    def _finish(self, start: float, writer: BagWriter, error: str | None) -> dict[str, object]:
        stats = self.stats
        files: dict[str, object] = {"bag": OUTPUT_BAG}
        clouds = {}
        for epoch in self.fused.epochs or [0]:
            name = f"cloud{epoch_suffix(epoch)}.ply"
            clouds[name] = self.fused.write(self.output.path(name), epoch)
        files["clouds"] = clouds
        files["cloud_voxel"] = self.fused.voxel_size
        files.update(self.viewers.finish(self.fused, self.output))
        if self.fused.coarsenings:
            self.issues.warn(
                "cloud_coarsened",
                f"the fused cloud reached {self.options.fuse_max_points} points: its voxel grew "
                f"to {self.fused.voxel_size:g} (raise --fuse-max-points to keep more detail)",
            )
        trajectories = {}
        epochs = self.trajectories.epochs or [0]
        for epoch in epochs:
            for camera in self.session.cameras:
                name = f"trajectory_{camera.replace('/', '_')}{epoch_suffix(epoch)}.tum"
                trajectories[name] = self.trajectories.write_tum(
                    self.output.path(name), epoch, camera)
        files["trajectories"] = trajectories
        optimised = self._write_optimised(files)
        lookups = self._evaluation_lookups()
        truth = self._sample_ground_truth(epochs, optimised)
        if not truth and lookups:
            truth = self._tf_ground_truth(epochs, lookups)
        files["ground_truth"] = {name: item["poses"] for name, item in truth.items()}
        evaluation = self._evaluate(epochs, optimised, lookups)
        interrupted = self._stop_requested
        complete = (error is None and not interrupted and self.bag.complete
                    and stats.failed_windows == 0)
        sync_stats = self.session.sync.stats()
        summary: dict[str, object] = {
            "bag": str(self.bag.path),
            "output": str(self.output.final),
            "complete": complete,
            "bag_damaged": self.bag.damaged,
            "interrupted": interrupted,
            "error": error,
            "frames": {
                "read": stats.frames_read,
                "in_bag": stats.images_total,
                "per_camera": {c: {"received": s.received, "used": s.used, "dropped": s.dropped,
                                   "rejected": s.rejected}
                               for c, s in sync_stats.items()},
                "first_rejection": stats.first_rejection,
            },
            "windows": stats.windows,
            "failed_windows": stats.failed_windows,
            "k": {"mode": self.params["num_steps_mode"],
                  "counts": {str(k): n for k, n in sorted(stats.k_values.items())}},
            "views_per_window": {str(s): n for s, n in sorted(stats.views.items())},
            "epochs": epochs,
            "timings_ms": {stage: _describe(values) for stage, values in stats.timings.items()},
            "wall_s": time.perf_counter() - start,
            "time_to_first_output_s": stats.first_output_s,
            "events": dict(stats.events),
            "issues": [issue.as_dict() for issue in self.issues.issues],
            "issue_counts": dict(self.issues.counts),
            "files": files,
            "output_messages": dict(writer.counts),
            "evaluation": evaluation,
            "grounding": self._grounding_summary(truth),
            "loop_closure": self._loop_summary(),
            "parameters": {k: v for k, v in self.params.items()},
        }
        self.output.path(SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        self.output.commit()
        return summary

    def _write_optimised(self, files: dict[str, object]) -> dict[int, dict[str, tuple]]:
        """The loop-corrected trajectories and map cloud of each map (world epoch); returns
        per epoch ``{camera: (stamps ns, poses)}``."""
        optimised: dict[int, dict[str, tuple]] = {}
        clouds, trajectories = {}, {}
        for loop_map in self.session.maps():
            epoch = loop_map.epoch
            name = f"cloud_optimised{epoch_suffix(epoch)}.ply"
            clouds[name] = self.session.map_cloud.write(self.output.path(name), epoch)
            optimised[epoch] = {}
            for camera, items in loop_map.corrected_poses().items():
                stamps = np.array([s for s, _ in items], np.int64)
                poses = np.stack([p for _, p in items])
                optimised[epoch][camera] = (stamps, poses)
                name = f"trajectory_{camera.replace('/', '_')}_optimised{epoch_suffix(epoch)}.tum"
                write_tum(self.output.path(name), [int(s) / 1e9 for s in stamps], poses)
                trajectories[name] = len(stamps)
        if optimised:
            files["clouds_optimised"] = clouds
            files["trajectories_optimised"] = trajectories
        return optimised

    def _loop_summary(self) -> dict[str, object]:
        """State, counts and timings of the loop closure."""
        stats = self.session.loop_stats
        out: dict[str, object] = {"state": stats.state, "map_frame": self.params["map_frame"]}
        if stats.state == "off":
            return out
        maps = self.session.maps()
        verdicts = [v for m in maps for v in m.closer.verdicts]
        out.update({
            "keyframes": sum(m.closer.counts.keyframes for m in maps),
            "candidates": sum(m.closer.counts.candidates for m in maps),
            "verified": len(verdicts),
            "accepted": sum(v.accepted for v in verdicts),
            "rejected": dict(Counter(v.reason for v in verdicts if not v.accepted)),
            "loops": [[v.current, v.candidate] for v in verdicts if v.accepted],
            "last_optimisation_ms": stats.optimise_ms,
        })
        return out

    def _grounding_summary(self, truth: dict[str, dict]) -> dict[str, object]:
        """Scale and anchor of the windows, the bag's TF, and the sample's ground truth."""
        stats, cfg = self.stats, self.session.grounding_config
        scales = stats.metres_per_unit
        return {
            "scale_source": cfg.scale_source,
            "anchor": cfg.anchor,
            "world_frame": str(self.params["world_frame"]),
            "metric_windows": len(scales),
            "sources": dict(stats.scale_sources),
            "anchors": dict(stats.anchors),
            "metres_per_unit": None if not scales else {
                "median": statistics.median(scales), "min": min(scales), "max": max(scales),
                "last": scales[-1]},
            "unscaled_reason": stats.first_unscaled,
            "tf": {"topics": self._tf_topics, "frames": sorted(self.tf.tree.frames),
                   "dropped": sum(self.tf.dropped.values()),
                   "dropped_kinds": dict(self.tf.dropped)},
            "depth_topics": [t.image for t in self.depth_topics],
            "ground_truth": truth,
        }

    def _sample_ground_truth(self, epochs: list[int],
                             optimised: Mapping[int, Mapping[str, tuple]]) -> dict[str, dict]:
        """For a sample bag: ``ground_truth<epoch>.tum`` per epoch (the reference camera's
        true poses in the output world frame at its reconstructed stamps) and the reference
        camera's ATE after an SE(3) alignment, and without any (the placement); with loop
        closure also the optimised trajectory's ATE after SE(3) and Sim(3) alignments."""
        if SCENE_TOPIC not in self.bag.topics:
            return {}
        try:
            config = read_sample_config(self.bag)
        except BagError as exc:
            self.issues.warn("ground_truth_unavailable", str(exc), SCENE_TOPIC)
            return {}
        namespace = str(self.params["cameras"][0]).strip("/")
        if namespace not in config.rig().names:
            return {}
        camera = self.session.cameras[0]
        world = str(self.params["world_frame"])
        in_odom = self.session.grounding_config.anchor == "tf" and world == ODOM_FRAME
        out = {}
        for epoch in epochs:
            stamps, poses = self.trajectories.arrays(epoch, camera)
            if not len(stamps):
                continue
            truth = ground_truth_in_world(config, namespace, stamps, in_odom, poses[0])
            name = f"ground_truth{epoch_suffix(epoch)}.tum"
            write_tum(self.output.path(name), [int(s) / 1e9 for s in stamps], truth)
            steps = np.linalg.norm(np.diff(truth[:, :3, 3], axis=0), axis=1)
            errors = np.linalg.norm(poses[:, :3, 3] - truth[:, :3, 3], axis=1)
            item: dict[str, object] = {
                "poses": len(stamps), "camera": camera,
                "frame": ODOM_FRAME if in_odom else f"{world} (the first reference pose)",
                "path_length_m": float(steps.sum()),
                "unaligned_rmse": float(np.sqrt(np.mean(errors**2))),
            }
            lookup = {camera: tum_lookup(stamps, truth, 0)}
            trajectories = {"": (stamps, poses)}
            if camera in optimised.get(epoch, {}):
                trajectories["_optimised"] = optimised[epoch][camera]
            for suffix, trajectory in trajectories.items():
                for align in ("se3", "sim3"):
                    key = f"ate_{align}_rmse{suffix}"
                    try:
                        item[key] = evaluate({camera: trajectory}, lookup, align).ate_rmse
                    except BagError as exc:
                        item[key] = None
                        item[f"{key}_reason"] = str(exc)
            out[name] = item
        return out

    def _evaluation_lookups(self) -> dict[str, Callable] | None:
        """The ground truth's pose lookup per camera, or None (none given, or unusable:
        warned)."""
        gt = self.options.ground_truth
        if gt is None:
            return None
        try:
            return self._ground_truth_lookups(gt)
        except BagError as exc:
            self.issues.warn("evaluation_failed", str(exc))
            return None

    def _tf_ground_truth(self, epochs: list[int],
                         lookups: Mapping[str, Callable]) -> dict[str, dict]:
        """With ``--gt-tf-topic`` (any bag): ``ground_truth<epoch>.tum`` per epoch, the
        reference camera's ground-truth poses at its reconstructed stamps (those the
        ground truth covers), in the ground-truth TF's root frame."""
        topic = self.options.ground_truth.tf_topic
        camera = self.session.cameras[0]
        if topic is None or camera not in lookups:
            return {}
        out = {}
        for epoch in epochs:
            stamps, _ = self.trajectories.arrays(epoch, camera)
            found = [(int(s), pose) for s in stamps
                     if (pose := lookups[camera](int(s))) is not None]
            if not found:
                continue
            name = f"ground_truth{epoch_suffix(epoch)}.tum"
            write_tum(self.output.path(name), [s / 1e9 for s, _ in found],
                      np.stack([pose for _, pose in found]))
            out[name] = {"poses": len(found), "camera": camera,
                         "frame": f"the root frame of {topic} (+ /tf_static)"}
        return out

    def _evaluate(self, epochs: list[int], optimised: Mapping[int, Mapping[str, tuple]],
                  lookups: Mapping[str, Callable] | None) -> list[dict[str, object]] | None:
        gt = self.options.ground_truth
        if gt is None or lookups is None:
            return None
        results = []
        for epoch in epochs:
            estimated = {c: self.trajectories.arrays(epoch, c) for c in self.session.cameras}
            try:
                evaluation: Evaluation = evaluate(estimated, lookups, gt.align)
            except Exception as exc:  # the reconstruction is kept whatever the scoring does
                self.issues.warn("evaluation_failed", f"world epoch {epoch}: {exc}")
                continue
            self._log("info", f"evaluation (world epoch {epoch}):\n{evaluation.table()}")
            item = {"epoch": epoch, **evaluation.as_dict()}
            if optimised.get(epoch):
                try:
                    corrected = evaluate(optimised[epoch], lookups, gt.align)
                except Exception as exc:
                    self.issues.warn("evaluation_failed", f"world epoch {epoch}, optimised "
                                     f"trajectories: {exc}")
                else:
                    self._log("info", f"evaluation of the loop-corrected trajectories (world "
                              f"epoch {epoch}):\n{corrected.table()}")
                    item["optimised"] = corrected.as_dict()
            results.append(item)
        return results

    def _ground_truth_lookups(self, gt: GroundTruth) -> dict[str, Callable]:
        lookups: dict[str, Callable] = {}
        if gt.tf_topic is not None:
            info = self.bag.topics.get(gt.tf_topic)
            if info is None or info.msgtype != TF_MESSAGE:
                found = "missing" if info is None else f"of type {info.msgtype}"
                raise BagError(f"ground-truth topic {gt.tf_topic} is {found}; TF topics in the "
                               "bag: " + ", ".join(sorted(
                                   t.name for t in self.bag.topics.values()
                                   if t.msgtype == TF_MESSAGE)))
            tree = TfTree()
            for topic, static in ((gt.tf_topic, False), ("/tf_static", True)):
                if topic in self.bag.topics and self.bag.topics[topic].msgtype == TF_MESSAGE:
                    try:
                        tree.add_tf_messages((deserialize_message(m.raw, TFMessage)
                                              for m in self.bag.messages([topic])), static)
                    except TransformError as exc:
                        raise BagError(f"ground truth on {topic}: {exc}") from None
            for camera, frame_id in self.frame_ids.items():
                if frame_id not in tree.frames:
                    self.issues.warn("evaluation_frame_missing",
                                     f"camera {camera}: frame {frame_id!r} is not in the "
                                     f"ground-truth TF ({gt.tf_topic} + /tf_static)")
                    continue
                lookups[camera] = _tree_lookup(tree, frame_id)
        for camera, path in gt.tum_files.items():
            if camera not in self.session.cameras:
                raise BagError(f"--gt-tum names camera {camera!r}; cameras: "
                               f"{', '.join(self.session.cameras)}")
            stamps, poses = read_tum(path)
            lookups[camera] = tum_lookup(stamps, poses, gt.tolerance_ns)
        return lookups


def _is_rejection(event: PipelineEvent) -> bool:
    """Whether ``event`` says that an image was refused."""
    return event.code in ("image_rejected", "stamp_rejected") or (
        event.code == "resolution_mismatch" and event.level == Level.ERROR)


def _tree_lookup(tree: TfTree, frame_id: str) -> Callable[[int], np.ndarray | None]:
    def lookup(stamp_ns: int) -> np.ndarray | None:
        try:
            return tree.lookup_root(frame_id, stamp_ns)[1]
        except TransformError:
            return None

    return lookup


def _describe(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "median": statistics.median(values),
            "max": max(values), "sum": sum(values)}
