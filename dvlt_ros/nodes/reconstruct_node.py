"""``reconstruct_node``: live multi-camera reconstruction with DVLT.

    ros2 run dvlt_ros reconstruct_node --ros-args --params-file config/reconstruct.yaml

The ROS edge of a :class:`~dvlt_ros.pipeline.session.ReconstructionSession`: camera
subscriptions feed it frames; at ``rate`` Hz (lossless: after every image) a worker thread
runs its cycle and a publishing thread sends the cloud, per-camera
depth/confidence/camera_info, TF, the trajectory, frusta and /diagnostics, in cycle order,
while the worker goes on with the next cycle. With a scale source or ``anchor: tf`` it listens
to the robot's TF (:class:`~dvlt_ros.node_support.tf_listener.TfListener`) and, for the
depth scale, to a depth topic per camera (:class:`~dvlt_ros.node_support.inputs.DepthInputs`).
With ``loop_closure`` it verifies loop candidates after publishing each cycle and publishes
the map (:mod:`~dvlt_ros.node_support.map_outputs`); ``~/reset`` (std_srvs/Trigger) clears it.
Parameters: :mod:`dvlt_ros.pipeline.settings`;
topics and frames: docs/node.md. In-process use (tests, ``dvlt-ros demo``): ``backend=``
replaces loading ``checkpoint``. As its own process (:func:`main`) it ends on SIGINT,
SIGTERM or the end of its launcher (:mod:`dvlt_ros.node_support.lifecycle`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress

from rclpy.node import Node
from std_msgs.msg import UInt64
from std_srvs.srv import Trigger

from dvlt_core.backends import InferenceBackend
from dvlt_core.mapping.loop_closer import Describer
from dvlt_ros.conversions.tf import stamp_from_ns
from dvlt_ros.node_support import diagnostics as diag
from dvlt_ros.node_support.health import WARN, EventReporter, ProblemBoard
from dvlt_ros.node_support.inputs import CameraInputs, DepthInputs
from dvlt_ros.node_support.lifecycle import GateClosedError, ShutdownGate
from dvlt_ros.node_support.map_outputs import MapPublishers
from dvlt_ros.node_support.model import LoadedModel, ModelSettings, ModelSwitch
from dvlt_ros.node_support.outputs import OutputPublishers
from dvlt_ros.node_support.parameters import declare_parameters, verdict
from dvlt_ros.node_support.qos import LATCHED_QOS, input_qos
from dvlt_ros.node_support.tf_listener import TfListener
from dvlt_ros.node_support.worker import CycleWorker, OrderedPublisher
from dvlt_ros.pipeline import CameraFrame, CycleResult, MetricScale, RigSnapshot
from dvlt_ros.pipeline.accumulate import FusedCloud
from dvlt_ros.pipeline.configs import grounding_config
from dvlt_ros.pipeline.events import loop_closure_error
from dvlt_ros.pipeline.report import CycleReport
from dvlt_ros.pipeline.scale import MeasuredDepth
from dvlt_ros.pipeline.session import ReconstructionSession
from dvlt_ros.pipeline.settings import NODE_NAME, ParameterError, check_values

# Seconds a stopping node process waits for a running cycle or model load before it exits
# without it (launch escalates to SIGTERM after 5 s, then SIGKILL).
SHUTDOWN_GRACE_S = 1.0
CycleListener = Callable[[CycleReport, CycleResult], None]


class ReconstructNode(Node):
    """The live reconstruction node (see the module docstring). ``fused``: also fuse every
    cycle's newest views into this cloud (the demo writes it); ``describer``: keyframe place
    descriptors for a backend that gives none (in-process use, like ``backend``)."""

    def __init__(self, *, backend: InferenceBackend | None = None,
                 metric_scale: MetricScale | None = None, fused: FusedCloud | None = None,
                 node_name: str = NODE_NAME, describer: Describer | None = None,
                 **node_kwargs) -> None:
        # Set before anything can fail: rclpy destroys a half-built node on shutdown.
        self.worker: CycleWorker | None = None
        self.publisher: OrderedPublisher | None = None
        self.session: ReconstructionSession | None = None
        self._gate = ShutdownGate()
        self._injected = backend
        super().__init__(node_name, **node_kwargs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        p = declare_parameters(self)
        self.problems = ProblemBoard()
        grounding = grounding_config(p)
        # The robot's TF: for the rig and odometry scales, the TF anchor and depth images
        # published in a frame of their own.
        self.tf = (TfListener(self, on_problem=self._on_tf_problem)
                   if grounding.uses_transforms or grounding.uses_depth else None)
        self.session = ReconstructionSession(p, metric_scale=metric_scale, fused=fused,
                                             checkpoint_required=backend is None,
                                             transforms=self.tf, describer=describer)
        self.cameras = list(self.session.cameras)
        self._report = EventReporter(self.problems, self.cameras, self.get_logger())
        self._listeners: list[CycleListener] = []
        self._last_diagnostics = 0.0
        self.outputs = OutputPublishers(self, self.cameras, p["world_frame"])
        # ~/reset (executor) only asks; the worker, which owns the map, clears it between
        # cycles, so the service never waits for a running inference.
        self._reset_requested = threading.Event()
        self.map_outputs = (MapPublishers(self, p["map_frame"], p["world_frame"],
                                          self.outputs.tf) if p["loop_closure"] else None)
        self._reset_service = self.create_service(Trigger, "~/reset", self._on_reset)
        self.lossless = p["lossless"]
        # Only a lossless node offers the acknowledgement topic: the replay tool takes its
        # presence as the sign that it may wait for acknowledgements.
        self._consumed = (
            self.create_publisher(UInt64, "~/consumed", LATCHED_QOS) if self.lossless else None
        )
        if self._consumed is not None:
            self._consumed.publish(UInt64(data=0))
        self.inputs = CameraInputs(
            self, p["cameras"], transport=p["image_transport"],
            use_camera_info=p["use_input_camera_info"], qos=input_qos(p["input_qos"]),
            on_frame=self._on_frame, on_event=self._report,
            on_rejected=self.session.count_rejected,
            max_pixels=p["max_pixels"], after_image=self._after_image,
        )
        self.depth_inputs = DepthInputs(
            self, p["cameras"], depth_topic=p["depth_topic"], qos=input_qos(p["input_qos"]),
            colour_view=self.inputs.colour_view, on_depth=self._on_depth,
            on_event=self._report, transforms=self.tf, max_pixels=p["max_pixels"],
        ) if grounding.uses_depth else None
        self.publisher = OrderedPublisher(on_error=self._on_cycle_error)
        self.worker = CycleWorker(self._cycle, on_error=self._on_cycle_error)
        self.models = ModelSwitch(self.problems, self.get_logger(), self.worker.wake, backend)
        if backend is not None:
            self._install_model(self.models.injected_model(p["checkpoint"]))
        else:
            self.models.request(p)
        # The timer wakes the worker at `rate`; in lossless mode every image wakes it too.
        self._timer = self.create_timer(1.0 / p["rate"], self.worker.wake)
        self._diag_timer = self.create_timer(p["diagnostics_period"], self._diagnostics_tick)
        self.get_logger().info(
            f"reconstructing {', '.join(self.cameras)} at {p['rate']:g} Hz in frame "
            f"'{p['world_frame']}' (K {p['num_steps_mode']}, num_steps={p['num_steps']}; "
            f"scale_source {p['scale_source']}, anchor {p['anchor']}"
            + (f", TF via {self.tf.backend}" if self.tf else "")
            + f"); model: {'injected ' + backend.name if backend else p['checkpoint']}"
        )

    # The session's parts, for callers and tests.
    params = property(lambda self: self.session.params)
    sync = property(lambda self: self.session.sync)
    k_policy = property(lambda self: self.session.k_policy)
    pipeline = property(lambda self: self.session.pipeline)
    last_report = property(lambda self: self.session.last_report)
    model = property(lambda self: self.models.model, doc="the running model, or None")

    def _on_set_parameters(self, params):
        changes = {param.name: param.value for param in params}
        if self.session is None:  # declaration: each value alone (the session checks later)
            return verdict(check_values(changes.items(),
                                        checkpoint_required=self._injected is None))
        return verdict(self.session.propose(changes))

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_frame(self, frame: CameraFrame) -> None:
        for event in self.session.add_frame(frame, self._now_ns()):
            self._report(event)
        if self.depth_inputs is not None:
            self.depth_inputs.flush(frame.camera)

    def _on_depth(self, camera: str, stamp_ns: int, depth: MeasuredDepth) -> None:
        for event in self.session.add_depth(camera, stamp_ns, depth):
            self._report(event)

    def _on_tf_problem(self, message: str) -> None:
        """A transform TF could not take (a second parent, a non-finite pose): dropped."""
        if self.problems.report("pipeline", "tf_dropped", WARN, message, self._report.ttl_s):
            self.get_logger().warning(message)

    def _after_image(self) -> None:
        if self.lossless:
            for event in self.session.after_image(self._now_ns()):
                self._report(event)
            self.worker.wake()

    def _install_model(self, model: LoadedModel, settings: ModelSettings | None = None) -> None:
        """Make ``model`` the one cycles run on; a replaced model starts a new world."""
        self.models.adopt(model, settings)
        for event in self.session.install_backend(model.backend):
            self._report(event)

    def add_cycle_listener(self, listener: CycleListener) -> None:
        """Call ``listener(report, result)`` on the publishing thread after each cycle's
        outputs were published."""
        self._listeners.append(listener)

    def _cycle(self) -> None:
        """One wake-up of the worker: apply parameter changes, swap in a model that
        finished loading, then reconstruct the newest snapshot (or, lossless, every queued
        one). Every use of ROS objects holds the shutdown gate; inference does not."""
        try:
            self._apply_reset()
            with self._gate.entered():
                if changes := self.session.apply_pending():
                    self.get_logger().info("applied " + ", ".join(
                        f"{k}={v!r}" for k, v in sorted(changes.items())))
                    self.models.changed(changes, self.params)
                if (outcome := self.models.take_loaded()) is not None:
                    self._install_model(outcome.model, outcome.settings)
                if self.pipeline is None:
                    return
                now_ns = self._now_ns()
                snapshot = None
                if not self.lossless:
                    snapshot, events = self.session.poll(now_ns)
                    for event in events:
                        self._report(event)
            if self.lossless:
                self._drain_lossless()
            elif snapshot is not None:
                self._reconstruct(snapshot, now_ns)
        except GateClosedError:
            pass  # shutting down: what this cycle made is not published

    def _drain_lossless(self) -> None:
        """Reconstruct queued snapshots in arrival order, acknowledging each image once
        everything it completed has been published."""
        while not self.worker.stopping and (item := self.session.next_queued()) is not None:
            snapshot, count = item
            try:
                if snapshot is not None:
                    with self._gate.entered():
                        now_ns = self._now_ns()
                    self._reconstruct(snapshot, now_ns)
            finally:  # a failed cycle is handled too: the player must not wait for it
                # After the outputs of this snapshot, which are queued before it.
                self.publisher.submit(lambda count=count: self._acknowledge(count))

    def _acknowledge(self, count: int) -> None:
        with suppress(GateClosedError), self._gate.entered():
            self._consumed.publish(UInt64(data=count))

    def _on_reset(self, request, response):
        """``~/reset``: ask the worker to forget the keyframe graph, the loops and the map
        cloud; answered at once, the map is cleared when the running cycle (if any) ends."""
        self._reset_requested.set()
        if self.worker is not None:
            self.worker.wake()
        response.success = True
        response.message = ("map reset: cleared after the running cycle, before the next"
                            if self.map_outputs else
                            "map reset (loop_closure is off: there was no map)")
        self.get_logger().info(f"~/reset: {response.message}")
        return response

    def _apply_reset(self) -> bool:
        """Worker thread, between cycles: clear the map if ``~/reset`` asked for it and
        publish the empty map; True when it did."""
        if not self._reset_requested.is_set():
            return False
        self._reset_requested.clear()
        keyframes = self.session.loop_stats.keyframes
        self.session.reset_map()
        with self._gate.entered():
            if self.map_outputs is not None:
                self.map_outputs.publish_reset(self._now_ns())
            self.get_logger().info(f"~/reset: map cleared ({keyframes} keyframes)")
        return True

    def _reconstruct(self, snapshot: RigSnapshot, now_ns: int) -> None:
        cycle = self.session.reconstruct(snapshot, now_ns)
        # The path as of this cycle: the next cycle adds to it while this one publishes.
        path = self.session.trajectories.path if cycle.path_updated else None
        self.publisher.submit(lambda: self._publish_cycle(cycle, path))
        if self.map_outputs is None:
            return
        # The map's verification and topics come after this cycle's outputs and share the
        # map with its report: no overlap with loop closure.
        self.publisher.wait_idle()
        with self._gate.entered():
            for event in cycle.loop_events:
                self._report(event)
        # A reset asked for during this cycle clears the map before its loops are verified.
        if self._apply_reset():
            return
        try:
            verdicts = self.session.close_loops()  # spare time: after this cycle's outputs
        except Exception as exc:  # the map without those candidates is still published
            verdicts = []
            with self._gate.entered():
                self._report(loop_closure_error(exc, cycle.result.stamp_ns))
        with self._gate.entered():
            self.map_outputs.publish(self.session, cycle.result.stamp_ns,
                                     closed=any(v.accepted for v in verdicts))

    def _publish_cycle(self, cycle, path) -> None:
        """On the publishing thread: the outputs of one cycle, its report and listeners."""
        with suppress(GateClosedError), self._gate.entered():
            result = cycle.result
            if cycle.decision.event is not None:
                self._report(cycle.decision.event)
            publish_start = time.perf_counter()
            points = self.outputs.publish(result, path)
            publish_ms = (time.perf_counter() - publish_start) * 1e3
            report = self.session.finish(cycle, publish_ms, points, self.worker.overruns)
            for event in result.events:
                self._report(event)
            self.get_logger().info(report.summary())
            self._publish_diagnostics()
            for listener in self._listeners:
                listener(report, result)

    def _on_cycle_error(self, exc: BaseException) -> None:
        with suppress(GateClosedError), self._gate.entered():
            self._report.failure("cycle_error", f"cycle failed: {type(exc).__name__}: {exc}")

    def _diagnostics_tick(self) -> None:
        """Keep /diagnostics alive when no cycle publishes (no input, no model)."""
        if time.monotonic() - self._last_diagnostics >= 0.5 * self.params["diagnostics_period"]:
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        self._last_diagnostics = time.monotonic()
        name = self.get_fully_qualified_name()
        values = {**diag.pipeline_values(self.session, self.worker.overruns),
                  **self.models.values(),
                  **(self.depth_inputs.values() if self.depth_inputs else {})}
        statuses = diag.session_statuses(name, self.session, values, lambda source: (
            self.problems.active(source)
            + (self.problems.active("model") if source == "pipeline" else [])))
        self.outputs.diagnostics.publish(
            diag.diagnostic_array(stamp_from_ns(self._now_ns()), statuses))

    def stop(self, timeout: float) -> bool:
        """Stop publishing now and the cycles within ``timeout`` seconds; True when no
        cycle or model load is still running (one inside a long PyTorch call is left
        behind, publishing nothing)."""
        self._gate.close()
        if self.worker is None:
            return True
        self.worker.stop(timeout)
        self.publisher.stop(timeout)
        return not (self.worker.running or self.publisher.running
                    or self.models.loading is not None)

    def destroy_node(self) -> None:
        if self._gate.is_open:  # in-process use: let the running cycle finish
            self.stop(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console entry point ``reconstruct_node``: 0 after SIGINT/SIGTERM (or the end of the
    launching process), 2 when a parameter is refused at start (one line, no traceback)."""
    from rclpy.logging import get_logger

    from dvlt_ros.node_support.lifecycle import run_node_process

    def refused(exc: Exception) -> None:
        get_logger(NODE_NAME).fatal(f"{exc}. Fix it in the parameters file or the -p "
                                    "override (parameters: docs/node.md)")

    return run_node_process(ReconstructNode, args, grace_s=SHUTDOWN_GRACE_S,
                            refused=ParameterError, on_refused=refused)


if __name__ == "__main__":
    raise SystemExit(main())
