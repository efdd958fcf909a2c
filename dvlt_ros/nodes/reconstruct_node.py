"""``reconstruct_node``: live multi-camera reconstruction with DVLT.

    ros2 run dvlt_ros reconstruct_node --ros-args --params-file config/reconstruct.yaml

Subscribes to the configured cameras, matches their frames into rig snapshots, and at
``rate`` Hz reconstructs the newest window on a worker thread with K loop steps, then
publishes the cloud, per-camera depth/confidence/camera_info, TF, the trajectory, frusta
and /diagnostics. Parameters: :mod:`dvlt_ros.node_support.parameters` and
``config/reconstruct.yaml``; topics and frames: docs/node.md.

The node can also run in-process (tests, the ``dvlt-ros demo`` tool): pass ``backend=`` to
use an already built inference backend instead of loading ``checkpoint``.

As its own process (:func:`main`) it ends on SIGINT or SIGTERM, and when the process that
started it ends, within about a second whatever a cycle is doing (see
:mod:`dvlt_ros.node_support.lifecycle`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict

from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import UInt64

from dvlt_core.backends import InferenceBackend
from dvlt_ros.conversions.tf import stamp_from_ns
from dvlt_ros.node_support import configs
from dvlt_ros.node_support import diagnostics as diag
from dvlt_ros.node_support.health import ERROR, WARN, ProblemBoard
from dvlt_ros.node_support.inputs import CameraInputs
from dvlt_ros.node_support.lifecycle import GateClosedError, ShutdownGate
from dvlt_ros.node_support.model import (
    LoadedModel,
    LoadOutcome,
    ModelLoader,
    ModelSettings,
    describe,
)
from dvlt_ros.node_support.outputs import OutputPublishers
from dvlt_ros.node_support.parameters import (
    RELOAD_PARAMETERS,
    ParameterError,
    camera_label,
    check_combination,
    check_parameters,
    declare_parameters,
)
from dvlt_ros.node_support.qos import LATCHED_QOS, input_qos
from dvlt_ros.node_support.report import CycleReport
from dvlt_ros.node_support.worker import CycleWorker
from dvlt_ros.pipeline import (
    CameraFrame,
    CycleResult,
    KPolicy,
    Level,
    MetricScale,
    PipelineEvent,
    ReconstructionPipeline,
    RigSnapshot,
    RigSynchronizer,
    WindowSelector,
)
from dvlt_ros.pipeline.cycle import observe_cycle, run_cycle

NODE_NAME = "reconstruct_node"
# Seconds a reported problem stays in diagnostics unless reported again (a bad stream
# re-reports it with every frame); timeouts and model errors last until resolved.
PROBLEM_TTL_S = 5.0
_PERSISTENT = {"camera_timeout"}
# Lossless mode: images waiting for reconstruction and acknowledgement (the replay tool
# keeps one in flight; the bound only matters when lossless is misused on live cameras).
LOSSLESS_QUEUE = 64
# Seconds a stopping node process waits for a running cycle or model load before it exits
# without it (launch escalates to SIGTERM after 5 s, then SIGKILL).
SHUTDOWN_GRACE_S = 1.0
CycleListener = Callable[[CycleReport, CycleResult], None]


class ReconstructNode(Node):
    """The live reconstruction node (see the module docstring)."""

    def __init__(
        self,
        *,
        backend: InferenceBackend | None = None,
        metric_scale: MetricScale | None = None,
        node_name: str = NODE_NAME,
        **node_kwargs,
    ) -> None:
        # Set before anything can fail: rclpy destroys a half-built node on shutdown.
        self.worker: CycleWorker | None = None
        self._gate = ShutdownGate()
        self._injected = backend
        super().__init__(node_name, **node_kwargs)
        self._lock = threading.Lock()
        self._pending: dict[str, object] = {}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.params = declare_parameters(self)
        p = self.params
        self.cameras = [camera_label(ns) for ns in p["cameras"]]
        self.problems = ProblemBoard()

        self.sync = RigSynchronizer(configs.sync_config(p))
        self.windows = WindowSelector(configs.window_config(p))
        self.k_policy = KPolicy(configs.k_policy_config(p))
        self._pipeline_config = configs.pipeline_config(p)
        self._metric_scale = metric_scale
        self._model: LoadedModel | None = None
        self._model_settings: ModelSettings | None = None
        self._loader: ModelLoader | None = None
        self.pipeline: ReconstructionPipeline | None = None
        self._arrivals: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._max_arrivals = 8 * len(self.cameras) * p["sync_queue_size"]
        self._listeners: list[CycleListener] = []
        self.last_report: CycleReport | None = None
        self._last_diagnostics = 0.0
        self._cycle_index = 0

        self.outputs = OutputPublishers(
            self, self.cameras, p["world_frame"], p["trajectory_length"]
        )
        self.lossless = p["lossless"]
        self._images_received = 0
        self._lossless_queue: deque[tuple[RigSnapshot | None, int]] = deque(
            maxlen=LOSSLESS_QUEUE)
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
            on_frame=self._on_frame, on_event=self._report, on_rejected=self._on_rejected,
            max_pixels=p["max_pixels"], after_image=self._after_image,
        )
        self.worker = CycleWorker(self._cycle, on_error=self._on_cycle_error)
        if backend is not None:
            identity, licence = describe(backend, p["checkpoint"])
            self._install_model(LoadedModel(backend, identity, licence, 0.0))
        else:
            self._loader = ModelLoader(on_done=self.worker.wake)
            self._request_model()
        # The timer wakes the worker at `rate`; in lossless mode every image wakes it too.
        self._timer = self.create_timer(1.0 / p["rate"], self.worker.wake)
        self._diag_timer = self.create_timer(p["diagnostics_period"], self._diagnostics_tick)
        self.get_logger().info(
            f"reconstructing {', '.join(self.cameras)} at {p['rate']:g} Hz in frame "
            f"'{p['world_frame']}' (K {p['num_steps_mode']}, num_steps={p['num_steps']}); "
            f"model: {'injected ' + backend.name if backend else p['checkpoint']}"
        )

    # ----------------------------------------------------------------- parameters
    def _on_set_parameters(self, params: list[Parameter]):
        # With an injected backend the checkpoint only labels it (empty: no weights).
        result = check_parameters(params, checkpoint_required=self._injected is None)
        if not result.successful:
            return result
        changes = {param.name: param.value for param in params}
        if getattr(self, "params", None) is None:  # declaration: read after declaring
            return result
        # Under the lock, so that the worker cannot apply pending changes between this
        # check and the update (the check must see every accepted value).
        with self._lock:
            problem = check_combination({**self.params, **self._pending, **changes})
            if problem:
                result.successful = False
                result.reason = problem
                return result
            self._pending.update(changes)
        return result

    def _apply_pending(self) -> None:
        """Apply parameter changes made since the last cycle (worker thread)."""
        with self._lock:
            changes, self._pending = self._pending, {}
            self.params.update(changes)
        if not changes:
            return
        p = self.params
        self.k_policy.update(**asdict(configs.k_policy_config(p)))
        self._pipeline_config = configs.pipeline_config(p)
        if self.pipeline is not None:
            self.pipeline.config = self._pipeline_config
        self.get_logger().info(
            "applied " + ", ".join(f"{k}={v!r}" for k, v in sorted(changes.items()))
        )
        if any(name in changes for name in RELOAD_PARAMETERS):
            self._request_model()

    # ----------------------------------------------------------------- inputs
    def _on_frame(self, frame: CameraFrame) -> None:
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            events = self.sync.add(frame, now_ns)
            self._arrivals[frame.key] = time.perf_counter()
            while len(self._arrivals) > self._max_arrivals:
                self._arrivals.popitem(last=False)
        for event in events:
            self._report(event)

    def _on_rejected(self, camera: str) -> None:
        with self._lock:
            self.sync.count_rejected(camera)

    def _after_image(self) -> None:
        """Lossless mode: after each image message (used or rejected), queue the snapshot
        it completed (or None) with the image count, for the worker to reconstruct and
        acknowledge in order."""
        if not self.lossless:
            return
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            self._images_received += 1
            snapshot, events = self.sync.poll(now_ns)
            if len(self._lossless_queue) == self._lossless_queue.maxlen:
                dropped, _ = self._lossless_queue[0]
                if dropped is not None:
                    events.append(PipelineEvent(
                        "queue_overflow", Level.WARN,
                        f"lossless queue full ({self._lossless_queue.maxlen} images): the "
                        "oldest snapshot was dropped; lossless mode is for `dvlt-ros replay "
                        "--lossless`, which waits for each acknowledgement",
                    ))
            self._lossless_queue.append((snapshot, self._images_received))
        for event in events:
            self._report(event)
        self.worker.wake()

    def _report(self, event: PipelineEvent) -> None:
        """Log an event (once while it persists) and show it in diagnostics."""
        source = event.camera or "pipeline"
        if event.code == "camera_recovered":
            self.problems.clear(source, "camera_timeout")
        elif event.code == "time_jump_reset":
            # The synchroniser forgets time-outs when it resets (a camera still silent
            # times out again), so no camera_recovered event would ever clear them.
            for camera in self.cameras:
                self.problems.clear(camera, "camera_timeout")
        if event.level == Level.INFO:
            self.get_logger().info(str(event))
            return
        ttl = None if event.code in _PERSISTENT else PROBLEM_TTL_S
        if not self.problems.report(source, event.code, diag.LEVELS[event.level],
                                    event.message, ttl):
            return
        # rclpy fixes the severity of each logging call site: one call per level.
        if event.level == Level.ERROR:
            self.get_logger().error(str(event))
        else:
            self.get_logger().warning(str(event))

    # ----------------------------------------------------------------- model
    @property
    def model(self) -> LoadedModel | None:
        """The loaded backend with its identity and licence (None until loaded)."""
        return self._model

    def _request_model(self) -> None:
        """Start loading the model the parameters name, beside the running one."""
        p = self.params
        if self._injected is not None:
            self.get_logger().warning(
                "the backend was passed in by the caller: backend/checkpoint/device/"
                "precision changes are ignored"
            )
            return
        settings = ModelSettings(p["backend"], p["checkpoint"], p["device"], p["precision"])
        if settings == self._model_settings:  # back to the running model's settings
            if self._loader.loading is not None:
                self.get_logger().info(f"keeping the running model; the load of "
                                       f"{self._loader.loading} is dropped")
            self._loader.discard()
            self.problems.clear("model", "model_reload_failed")
            return
        what = "loading" if self._model is None else "loading (beside the running model)"
        self.get_logger().info(f"{what}: {settings}")
        self._loader.request(settings)

    def _adopt_loaded_model(self) -> None:
        """Swap in a model that finished loading, or report why it did not load (worker
        thread, between cycles: a cycle always runs on one model)."""
        outcome = self._loader.take() if self._loader is not None else None
        if outcome is None:
            return
        if outcome.model is not None:
            self.get_logger().info(
                f"model loaded in {outcome.model.load_ms:.0f} ms: {outcome.model.identity}")
            self._install_model(outcome.model, outcome.settings)
            return
        self._report_load_failure(outcome)

    def _report_load_failure(self, outcome: LoadOutcome) -> None:
        s = outcome.settings
        retry = ("Set the checkpoint parameter (ros2 param set <node> checkpoint <Hub id | "
                 "directory | file>) to retry")
        failure = f"cannot load {s.backend} model from checkpoint '{s.checkpoint}': {outcome.error}"
        if self._model is None:
            message = f"{failure}. {retry}"
            self.problems.report("model", "checkpoint", ERROR, message)
            self.get_logger().error(message)
        else:
            message = (f"{failure}. Still reconstructing with the running model "
                       f"({self._model.identity}). {retry}")
            self.problems.report("model", "model_reload_failed", WARN, message)
            self.get_logger().warning(message)

    def _install_model(self, model: LoadedModel, settings: ModelSettings | None = None) -> None:
        """Make ``model`` the one cycles run on; a replaced model starts a new world."""
        self.problems.clear("model")
        if self.pipeline is not None:
            self.outputs.reset_trajectory()
        self._model, self._model_settings = model, settings
        self.pipeline = ReconstructionPipeline(
            model.backend, self._pipeline_config, world=configs.world_config(self.params),
            metric_scale=self._metric_scale,
        )
        with self._lock:  # arrivals are checked against this model's input size
            events = self.sync.set_img_size(self.pipeline.reconstructor.img_size)
        for event in events:
            self._report(event)
        self.k_policy.model.reset()

    # ----------------------------------------------------------------- cycle
    def add_cycle_listener(self, listener: CycleListener) -> None:
        """Call ``listener(report, result)`` on the worker thread after each cycle."""
        self._listeners.append(listener)

    def _cycle(self) -> None:
        """One wake-up of the worker: apply parameter changes, swap in a model that
        finished loading, then reconstruct the newest snapshot (or, lossless, every queued
        one). Every use of ROS objects holds the shutdown gate; inference does not."""
        try:
            with self._gate.entered():
                self._apply_pending()
                self._adopt_loaded_model()
                if self.pipeline is None:
                    return
                if not self.lossless:
                    now_ns = self.get_clock().now().nanoseconds
                    with self._lock:
                        snapshot, events = self.sync.poll(now_ns)
                    for event in events:
                        self._report(event)
            if self.lossless:
                self._drain_lossless()
            elif snapshot is not None:
                self._reconstruct(snapshot)
        except GateClosedError:
            pass  # shutting down: what this cycle made is not published

    def _drain_lossless(self) -> None:
        """Reconstruct queued snapshots in arrival order, acknowledging each image once
        everything it completed has been published."""
        while not self.worker.stopping:
            with self._lock:
                if not self._lossless_queue:
                    return
                snapshot, count = self._lossless_queue.popleft()
            try:
                if snapshot is not None:
                    self._reconstruct(snapshot)
            finally:  # a failed cycle is handled too: the player must not wait for it
                with self._gate.entered():
                    self._consumed.publish(UInt64(data=count))

    def _reconstruct(self, snapshot) -> None:
        with self._lock:
            arrived = [self._arrivals.get(f.key) for f in snapshot.frames]
        start = time.perf_counter()
        known = [a for a in arrived if a is not None]
        sync_wait_ms = (start - max(known)) * 1e3 if known else 0.0
        cycle = run_cycle(snapshot, self.windows, self.k_policy, self.pipeline)
        with self._gate.entered():
            self._publish_cycle(cycle, start, sync_wait_ms)

    def _publish_cycle(self, cycle, start: float, sync_wait_ms: float) -> None:
        window, decision, result = cycle.window, cycle.decision, cycle.result
        if decision.event is not None:
            self._report(decision.event)
        publish_start = time.perf_counter()
        points = self.outputs.publish(result)
        end = time.perf_counter()
        publish_ms = (end - publish_start) * 1e3
        observe_cycle(self.k_policy, cycle, publish_ms)
        for event in result.events:
            self._report(event)
        self._cycle_index += 1
        report = self._make_report(result, decision, sync_wait_ms, publish_ms,
                                   (end - start) * 1e3, points, window)
        self.last_report = report
        self.get_logger().info(report.summary())
        self._publish_diagnostics()
        for listener in self._listeners:
            listener(report, result)

    def _make_report(self, result, decision, sync_wait_ms, publish_ms, total_ms, points,
                     window) -> CycleReport:
        t, b = result.timings, result.backend_timings
        with self._lock:
            drops = sum(s.dropped for s in self.sync.stats().values())
        return CycleReport(
            cycle=self._cycle_index,
            stamp_ns=result.stamp_ns,
            epoch=result.epoch,
            num_steps=result.num_steps,
            num_steps_mode=decision.mode,
            predicted_ms=decision.predicted_ms,
            num_views=result.num_views,
            num_cameras=len(window.newest),
            num_timesteps=max(window.timesteps) + 1,
            points=points,
            units=result.units,
            sync_wait_ms=sync_wait_ms,
            preprocess_ms=t.preprocess_ms,
            inference_ms=t.inference_ms,
            pose_fit_ms=t.pose_fit_ms,
            world_ms=t.world_ms,
            products_ms=t.products_ms,
            publish_ms=publish_ms,
            total_ms=total_ms,
            encode_ms=b.encode_ms,
            step_ms=sum(b.step_ms) / len(b.step_ms) if b.step_ms else 0.0,
            decode_ms=b.decode_ms,
            drops=drops,
            overruns=self.worker.overruns,
        )

    def _on_cycle_error(self, exc: BaseException) -> None:
        message = f"cycle failed: {type(exc).__name__}: {exc}"
        try:
            with self._gate.entered():
                if self.problems.report("pipeline", "cycle_error", ERROR, message,
                                        PROBLEM_TTL_S):
                    self.get_logger().error(message)
        except GateClosedError:
            pass

    # ----------------------------------------------------------------- diagnostics
    def _diagnostics_tick(self) -> None:
        """Keep /diagnostics alive when no cycle publishes (no input, no model)."""
        if time.monotonic() - self._last_diagnostics >= 0.5 * self.params["diagnostics_period"]:
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        self._last_diagnostics = time.monotonic()
        name = self.get_fully_qualified_name()
        report, model = self.last_report, self._model
        values: dict[str, object] = {
            "num_steps_mode": self.params["num_steps_mode"],
            "num_steps_setting": self.params["num_steps"],
            "cycles": self._cycle_index,
            "overruns": self.worker.overruns,
        }
        if report is not None:
            values.update({
                "num_steps": report.num_steps,
                "views": report.num_views,
                "cameras_in_window": report.num_cameras,
                "timesteps_in_window": report.num_timesteps,
                "points": report.points,
                "units": diag.units_text(report.units),
                "latency_budget_ms": self.params["latency_budget_ms"],
                "predicted_ms": report.predicted_ms if report.predicted_ms is not None
                else "n/a",
            })
            values.update({f"latency_{k}": v for k, v in report.as_dict().items()
                           if k.endswith("_ms") and k != "predicted_ms"})
            values["drops"] = report.drops
        if model is not None:
            values.update({"model": model.identity, "licence": model.licence})
            values.update(diag.gpu_memory_values(model.backend.device))
        else:
            values["model"] = "not loaded"
        loading = self._loader.loading if self._loader is not None else None
        if loading is not None:
            values["model_loading"] = f"{loading.backend} from checkpoint '{loading.checkpoint}'"
        statuses = [diag.status(
            f"{name}: pipeline", name, values,
            self.problems.active("pipeline") + self.problems.active("model"),
        )]
        with self._lock:
            stats = {camera: diag.camera_values(s) for camera, s in self.sync.stats().items()}
        for camera in self.cameras:
            statuses.append(diag.status(
                f"{name}: camera {camera}", camera, stats[camera], self.problems.active(camera)
            ))
        stamp = self.get_clock().now().nanoseconds
        self.outputs.diagnostics.publish(diag.diagnostic_array(stamp_from_ns(stamp), statuses))

    def stop(self, timeout: float) -> bool:
        """Stop publishing now and the cycles within ``timeout`` seconds; True when no
        cycle or model load is still running (one inside a long PyTorch call is left
        behind, publishing nothing)."""
        self._gate.close()
        if self.worker is None:
            return True
        self.worker.stop(timeout)
        loading = self._loader is not None and self._loader.loading is not None
        return not (self.worker.running or loading)

    def destroy_node(self) -> None:
        if self._gate.is_open:  # in-process use: let the running cycle finish
            self.stop(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console entry point ``reconstruct_node``: 0 after SIGINT/SIGTERM (or the end of the
    launching process), 2 when a parameter is refused at start (one line, no traceback)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from dvlt_ros.node_support.lifecycle import exit_now, exit_with_parent, stop_on_signals

    exit_with_parent()
    # The node handles the signals itself: rclpy's handlers would invalidate the context
    # while a cycle may still publish.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_requested = stop_on_signals()
    try:
        node = ReconstructNode()
    except ParameterError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(
            f"{exc}. Fix it in the parameters file or the -p override (parameters: "
            "docs/node.md)")
        rclpy.shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop_requested.is_set() and rclpy.ok():
        executor.spin_once(timeout_sec=0.1)
    finished = node.stop(SHUTDOWN_GRACE_S)
    if not finished:
        node.get_logger().info("stopping without waiting for the running cycle or model load")
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    if not finished:
        exit_now(0)  # a thread inside PyTorch must not meet interpreter finalisation
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
