"""The node's building blocks without DDS: problem board, cycle worker, ordered publisher,
model loader,
shutdown gate, diagnostics statuses, and the CameraInfo, frusta and path conversions."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from dvlt_ros.conversions.camera_info import (
    camera_info_from_intrinsics,
    intrinsics_from_camera_info,
)
from dvlt_ros.conversions.markers import frusta_markers
from dvlt_ros.conversions.path import path_message
from dvlt_ros.conversions.tf import ns_from_stamp
from dvlt_ros.node_support.diagnostics import status
from dvlt_ros.node_support.health import ERROR, OK, WARN, ProblemBoard
from dvlt_ros.node_support.lifecycle import GateClosedError, ShutdownGate
from dvlt_ros.node_support.model import LoadedModel, ModelLoader, ModelSettings
from dvlt_ros.node_support.worker import CycleWorker, OrderedPublisher


def test_problem_board_logs_once_and_expires():
    now = [0.0]
    board = ProblemBoard(clock=lambda: now[0])
    assert board.report("cam0", "out_of_order", WARN, "stamp 10 is older than 12", ttl=5)
    assert not board.report("cam0", "out_of_order", WARN, "stamp 11 is older than 13", ttl=5)
    assert board.report("cam0", "out_of_order", ERROR, "stamp 11 is older than 13", ttl=5)
    assert board.report("model", "checkpoint", ERROR, "cannot load")
    assert board.level() == ERROR and board.level("cam1") == OK
    now[0] = 6.0
    assert [p.kind for p in board.active()] == ["checkpoint"]  # the ttl one expired
    assert [p.kind for p in board.clear("model")] == ["checkpoint"]
    assert board.active() == []


def test_cycle_worker_coalesces_wakeups_and_survives_errors():
    release = threading.Event()
    runs, errors = [], []

    def cycle():
        runs.append(1)
        if len(runs) == 1:
            release.wait(5)
        if len(runs) == 2:
            raise RuntimeError("boom")

    worker = CycleWorker(cycle, on_error=errors.append)
    try:
        worker.wake()
        while not runs:
            threading.Event().wait(0.01)
        for _ in range(5):  # while busy: one is kept, four are overruns
            worker.wake()
        release.set()
        assert worker.wait_idle(5)
        assert len(runs) == 2 and worker.overruns == 4
        assert [str(e) for e in errors] == ["boom"]
        worker.wake()
        assert worker.wait_idle(5) and len(runs) == 3
        assert not worker.stopping
    finally:
        worker.stop()
    assert worker.stopping  # long cycles (lossless draining) check it to end early


def test_ordered_publisher_runs_jobs_in_order_bounded_and_survives_errors():
    """Jobs run one at a time in submission order; a submit beyond ``max_pending`` waiting
    jobs blocks (nothing dropped); a failing job is reported and the next ones still run;
    stop runs what was queued, and a job submitted after stop still runs, after them."""
    release = threading.Event()
    ran, errors = [], []

    def job(i):
        def run():
            if i == 0:
                release.wait(5)
            if i == 3:
                raise RuntimeError("boom")
            ran.append(i)
        return run

    publisher = OrderedPublisher(max_pending=2, on_error=errors.append)
    submitted = []

    def producer():
        for i in range(6):
            publisher.submit(job(i))
            submitted.append(i)

    thread = threading.Thread(target=producer)
    thread.start()
    _wait(lambda: len(submitted) == 3)  # job 0 runs, 1 and 2 wait: the 4th submit blocks
    threading.Event().wait(0.05)
    assert submitted == [0, 1, 2] and ran == []
    release.set()
    thread.join(5)
    assert publisher.wait_idle(5)
    assert ran == [0, 1, 2, 4, 5] and [str(e) for e in errors] == ["boom"]
    release.clear()
    publisher.submit(job(0))
    publisher.submit(job(6))
    publisher.stop(timeout=0.01)  # job 0 still waits: the thread finishes the queue later
    late = threading.Thread(target=lambda: publisher.submit(job(7)))
    late.start()
    release.set()
    late.join(5)
    assert ran == [0, 1, 2, 4, 5, 0, 6, 7]
    publisher.stop(5)
    assert not publisher.running

def _settings(checkpoint: str) -> ModelSettings:
    return ModelSettings("torch", checkpoint, "cpu", "fp32")


class _GatedLoads:
    """A load function (the loader's boundary) that finishes each load when told to."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}

    def __call__(self, settings: ModelSettings) -> LoadedModel:
        self.started.append(settings.checkpoint)
        self.gates.setdefault(settings.checkpoint, threading.Event()).wait(10)
        if settings.checkpoint == "bad":
            raise OSError("no such file")
        return LoadedModel(None, settings.checkpoint, "", 0.0)

    def finish(self, checkpoint: str) -> None:
        self.gates.setdefault(checkpoint, threading.Event()).set()


def _wait(condition) -> None:
    for _ in range(500):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("timed out")


def test_model_loader_one_load_at_a_time_newest_wins():
    loads, done = _GatedLoads(), threading.Semaphore(0)
    loader = ModelLoader(on_done=done.release, load=loads)
    loader.request(_settings("a"))
    _wait(lambda: loads.started == ["a"])
    assert loader.loading == _settings("a") and loader.take() is None
    loader.request(_settings("b"))  # while "a" loads: queued ...
    loader.request(_settings("c"))  # ... and replaced by the newest
    assert loader.loading == _settings("c")
    loads.finish("a")  # "a" is no longer wanted: dropped, "c" starts
    _wait(lambda: loads.started == ["a", "c"])
    loads.finish("c")
    assert done.acquire(timeout=10)
    outcome = loader.take()
    assert outcome.settings == _settings("c") and outcome.model.identity == "c"
    assert loader.take() is None and loader.loading is None

    loader.request(_settings("bad"))
    loads.finish("bad")
    assert done.acquire(timeout=10)
    failed = loader.take()
    assert failed.model is None and failed.error == "no such file"

    loader.request(_settings("d"))
    _wait(lambda: loads.started[-1] == "d")
    loader.discard()  # back to the running model: nothing of "d" is wanted
    assert loader.loading == _settings("d")  # still running, ...
    loads.finish("d")
    _wait(lambda: loader.loading is None)
    assert loader.take() is None  # ... and dropped


def test_shutdown_gate_waits_for_its_holder_then_stays_closed():
    gate, inside, leave = ShutdownGate(), threading.Event(), threading.Event()

    def hold():
        with gate.entered():
            inside.set()
            leave.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(5)
    closer = threading.Thread(target=gate.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # close() waits while a thread uses the ROS objects
    leave.set()
    closer.join(5)
    holder.join(5)
    assert not gate.is_open
    with pytest.raises(GateClosedError), gate.entered():
        pass


def test_status_takes_the_worst_problem():
    board = ProblemBoard()
    board.report("cam0", "a", WARN, "late")
    board.report("cam0", "b", ERROR, "broken")
    msg = status("node: camera cam0", "cam0", {"rate": 1.5}, board.active("cam0"))
    assert msg.level == bytes([ERROR]) and msg.message == "broken; late"
    assert [(kv.key, kv.value) for kv in msg.values] == [
        ("rate", "1.500"), ("problem: b", "broken"), ("problem: a", "late")]
    assert status("n", "h", {}, []).level == bytes([OK])


def test_camera_info_round_trip():
    K = np.array([[500.0, 0.0, 319.5], [0.0, 505.0, 239.5], [0.0, 0.0, 1.0]])
    msg = camera_info_from_intrinsics(K, 640, 480, Header(frame_id="cam_dvlt"))
    assert (msg.width, msg.height, msg.header.frame_id) == (640, 480, "cam_dvlt")
    np.testing.assert_array_equal(intrinsics_from_camera_info(msg), K)
    np.testing.assert_array_equal(np.reshape(msg.p, (3, 4))[:, :3], K)
    assert list(msg.d) == [0.0] * 5 and msg.distortion_model == "plumb_bob"
    with pytest.raises(ValueError, match="finite"):
        camera_info_from_intrinsics(np.full((3, 3), np.nan), 640, 480)


def test_frusta_and_path_messages():
    vertices = np.array([[0, 0, 0], [1, 1, 1], [2, 1, 1], [2, 2, 1], [1, 2, 1]], float)
    edges = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
    header = Header(frame_id="dvlt_world")
    markers = frusta_markers(header, [(vertices, edges), (vertices * np.nan, edges)],
                             colors=[3, 0])
    assert [m.action for m in markers.markers] == [Marker.DELETEALL, Marker.ADD]
    line = markers.markers[1]
    assert line.type == Marker.LINE_LIST and len(line.points) == 16
    assert (line.points[1].x, line.points[1].y, line.points[1].z) == (1.0, 1.0, 1.0)

    pose = np.eye(4)
    pose[:3, 3] = (1.0, 2.0, 3.0)
    path = path_message(header, [(5, np.eye(4)), (7_000_000_001, pose)])
    assert [ns_from_stamp(p.header.stamp) for p in path.poses] == [5, 7_000_000_001]
    assert path.poses[1].pose.position.z == 3.0 and path.poses[1].header.frame_id == "dvlt_world"
