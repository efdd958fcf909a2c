"""``dvlt-ros process``: a rosbag2 in, reconstruction outputs out, without DDS.

The bag's camera messages are decoded like the node's subscriptions do
(:mod:`dvlt_ros.bags.decode`) and fed, in log-time order, to the node's
:class:`~dvlt_ros.pipeline.session.ReconstructionSession`, driven as the node drives it in
lossless mode (every snapshot reconstructed). Each cycle's products and diagnostics are
written by the node's own :class:`~dvlt_ros.node_support.outputs.OutputPublishers` and
diagnostics builder into an mcap bag (through :class:`~dvlt_ros.bags.writer.RecordingNode`),
at the source stamps. At the end: the session's fused cloud as ``.ply``, its trajectories
as one TUM file per camera, an optional evaluation, and ``summary.json``. Output files
appear atomically (:class:`~dvlt_ros.bags.staged_output.StagedOutput`); an interruption
(``stop()``, e.g. on SIGINT) or a damaged bag ends the run early, and what was
reconstructed until then is finalised and kept.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.serialization import deserialize_message
from tf2_msgs.msg import TFMessage

from dvlt_core.backends import InferenceBackend
from dvlt_core.geometry import TfTree, TransformError
from dvlt_ros.bags.decode import CameraTopics, FrameDecoder, camera_topics
from dvlt_ros.bags.evaluation import Evaluation, evaluate, read_tum, tum_lookup
from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.msgtypes import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, TF_MESSAGE
from dvlt_ros.bags.source import BagSource
from dvlt_ros.bags.staged_output import StagedOutput
from dvlt_ros.bags.streams import StreamMonitor
from dvlt_ros.bags.writer import BagWriter, RecordingNode
from dvlt_ros.conversions.tf import stamp_from_ns
from dvlt_ros.node_support import diagnostics as diag
from dvlt_ros.node_support.health import LEVELS, Problem
from dvlt_ros.node_support.outputs import OutputPublishers
from dvlt_ros.pipeline import Level, MetricScale, PipelineEvent
from dvlt_ros.pipeline.accumulate import FusedCloud, epoch_suffix
from dvlt_ros.pipeline.session import ReconstructedSnapshot, ReconstructionSession
from dvlt_ros.pipeline.settings import NODE_NAME

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


class BagProcessor:
    """Process one bag (see the module docstring). ``log(level, text)`` receives messages
    for the user; ``progress(done, total, windows)`` is called after each image."""

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
    ) -> None:
        self.bag = bag
        self.params = dict(params)
        self.options = options or ProcessOptions()
        self.issues = issues or bag.issues
        self._log = log or (lambda level, text: None)
        self._progress = progress
        self.topics = self._check_topics()
        self._image_topics = {t.camera: t.image for t in self.topics}
        self.session = ReconstructionSession(
            self.params, metric_scale=metric_scale, keep_all_poses=True,
            fused=FusedCloud(self.options.fuse_voxel, self.options.fuse_max_points),
            on_accept=self._on_accept)
        self.fused, self.trajectories = self.session.fused, self.session.trajectories
        self._backend = backend
        self.decoder = FrameDecoder(bool(self.params["use_input_camera_info"]),
                                    int(self.params["max_pixels"]))
        self.monitor = StreamMonitor(self.issues,
                                     jump_threshold_ns=round(
                                         float(self.params["time_jump_threshold"]) * 1e9))
        self.output = StagedOutput(out_dir, overwrite=self.options.overwrite)
        self._stop_requested = False
        self.stats = _Stats()
        self.frame_ids: dict[str, str] = {}

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
        for message in self.bag.messages(names):
            if message.topic in by_info:
                self.decoder.camera_info(by_info[message.topic].camera, message.raw)
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
                if item[0] is None:
                    continue
                try:
                    cycle = self.session.reconstruct(item[0], message.log_ns)
                except Exception as exc:  # like the live node: report, keep going
                    self.stats.failed_windows += 1
                    self._report(PipelineEvent(
                        "cycle_error", Level.ERROR,
                        f"the window at {item[0].stamp_ns * 1e-9:.3f} s failed: "
                        f"{type(exc).__name__}: {exc}", stamp_ns=item[0].stamp_ns))
                    continue
                self._write_cycle(cycle, start, recorder, publishers)
            if self._progress is not None:
                self._progress(self.stats.frames_read, self.stats.images_total,
                               self.stats.windows)
            if self._stop_requested:
                break

    def _write_cycle(self, cycle: ReconstructedSnapshot, start: float, recorder: RecordingNode,
                     publishers: OutputPublishers) -> None:
        result = cycle.result
        if cycle.decision.event is not None:
            self._report(cycle.decision.event)
        for event in result.events:
            self._report(event)
        write_start = time.perf_counter()
        recorder.set_stamp(result.stamp_ns)
        path = self.trajectories.path if cycle.path_updated else None
        points = publishers.publish(result, path)
        write_ms = (time.perf_counter() - write_start) * 1e3
        self.session.finish(cycle, write_ms, points)
        recorder.writer.write("/diagnostics", self._diagnostics(cycle), result.stamp_ns)
        stats = self.stats
        stats.windows += 1
        if stats.first_output_s is None:
            stats.first_output_s = time.perf_counter() - start
        stats.k_values[result.num_steps] += 1
        stats.views[result.num_views] += 1
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
        evaluation = self._evaluate(epochs)
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
            "parameters": {k: v for k, v in self.params.items()},
        }
        self.output.path(SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        self.output.commit()
        return summary

    def _evaluate(self, epochs: list[int]) -> list[dict[str, object]] | None:
        gt = self.options.ground_truth
        if gt is None:
            return None
        try:
            lookups = self._ground_truth_lookups(gt)
        except BagError as exc:
            self.issues.warn("evaluation_failed", str(exc))
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
            results.append({"epoch": epoch, **evaluation.as_dict()})
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
