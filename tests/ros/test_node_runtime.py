"""reconstruct_node at run time over real DDS (ground-truth backend): K and torch's
threads changed through the parameter service, parameter validation, bounded memory under
overload, and the lossless replay mode. Then the node as its own process (real ViT-S
model): how it ends on SIGINT/SIGTERM during a long cycle and when its launcher dies."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from node_harness import (
    NodeProcess,
    OutputCollector,
    RigPublisher,
    RosGraph,
    node_command,
    save_small_checkpoint,
    stamp_of,
    status_values,
    wait_cycle,
)
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import Image
from std_msgs.msg import UInt64

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.synthetic import default_rig
from dvlt_ros.node_support.qos import LATCHED_QOS
from dvlt_ros.testing.processes import process_ended

TIMES = (0.0, 0.5, 1.0, 1.5)


@pytest.fixture
def graph():
    g = RosGraph()
    yield g
    g.close()


@pytest.fixture(scope="module")
def rig():
    return default_rig(width=112, height=84, num_cameras=2)


@pytest.fixture(scope="module")
def backend(rig):
    return GroundTruthBackend.for_rig(rig, TIMES, img_size=112)


def _set(graph, client, **values):
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    assert graph.spin_until(future.done, 10), "parameter service did not answer"
    return future.result().results


def test_num_steps_changes_at_run_time(graph, rig, backend):
    """`ros2 param set reconstruct_node num_steps 5`: the next cycle runs K=5; values
    outside 1..64 and unknown modes are refused with the reason, and K is unchanged."""
    node = graph.reconstruct_node(backend, cameras=rig.names, rate=20.0, input_qos="reliable",
                                  num_steps=12)
    publisher = RigPublisher(graph, rig)
    collector = OutputCollector(graph, rig.names)
    publisher.wait_connected()
    assert wait_cycle(graph, node, publisher.publish(TIMES[0])).num_steps == 12

    client = AsyncParameterClient(publisher.node, "reconstruct_node")
    assert client.wait_for_services(10)
    (ok,) = _set(graph, client, num_steps=5)
    assert ok.successful
    assert wait_cycle(graph, node, publisher.publish(TIMES[1])).num_steps == 5

    for bad, reason in (({"num_steps": 65}, ""), ({"num_steps": 0}, ""),
                        ({"num_steps_mode": "fastest"}, "num_steps_mode must be one of")):
        (result,) = _set(graph, client, **bad)
        assert not result.successful and reason in result.reason
    (read_only,) = _set(graph, client, cameras=["x"])
    assert not read_only.successful
    assert wait_cycle(graph, node, publisher.publish(TIMES[2])).num_steps == 5

    status = collector.wait_status(
        ": pipeline", lambda s: status_values(s).get("num_steps") == "5")
    assert status is not None
    values = status_values(status)
    assert values["views"] == "4" and values["units"] == "metres"
    for stage in ("sync_wait", "preprocess", "inference", "pose_fit", "publish"):
        assert float(values[f"latency_{stage}_ms"]) >= 0.0
    assert "licence" in values and "ground_truth" in values["model"]


class _ThreadCounting(GroundTruthBackend):
    """Records, in each inference, the thread running it and torch's intra-op threads there."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def infer(self, images, num_steps=None):
        self.calls.append((threading.current_thread().name, torch.get_num_threads()))
        return super().infer(images, num_steps)


def test_torch_threads_apply_on_the_inference_thread(graph, rig):
    """`ros2 param set reconstruct_node torch_threads N`: from the next cycle the model runs
    with N intra-op threads on the worker thread that calls it (OpenMP's count is per thread:
    the node's other threads keep theirs); 0 gives torch's default back; negative values
    are refused."""
    backend = _ThreadCounting.for_rig(rig, TIMES, img_size=112)
    here = torch.get_num_threads()
    node = graph.reconstruct_node(backend, cameras=rig.names, rate=20.0, input_qos="reliable",
                                  camera_timeout=1e4)
    publisher = RigPublisher(graph, rig)
    collector = OutputCollector(graph, rig.names)
    publisher.wait_connected()
    client = AsyncParameterClient(publisher.node, "reconstruct_node")
    assert client.wait_for_services(10)
    wait_cycle(graph, node, publisher.publish(TIMES[0]))
    (worker, default), = set(backend.calls)
    assert worker == "dvlt-cycle"

    threads = default + 1  # not the default, whatever the machine's core count
    (ok,) = _set(graph, client, torch_threads=threads)
    assert ok.successful
    wait_cycle(graph, node, publisher.publish(TIMES[1]))
    assert backend.calls[-1] == ("dvlt-cycle", threads)
    assert torch.get_num_threads() == here  # set on the worker, not on the caller's thread
    status = collector.wait_status(
        ": pipeline", lambda s: status_values(s).get("torch_threads") == str(threads))
    assert status is not None

    (refused,) = _set(graph, client, torch_threads=-1)
    assert not refused.successful
    assert node.get_parameter("torch_threads").value == threads
    (ok,) = _set(graph, client, torch_threads=0)
    assert ok.successful
    wait_cycle(graph, node, publisher.publish(TIMES[2]))
    assert backend.calls[-1] == ("dvlt-cycle", default)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_overload_keeps_queues_and_memory_bounded(graph, rig, backend):
    """Cameras at ~100 Hz into a node that cannot keep up: queues stay at their bound,
    drops and overruns are counted and reported, memory stays flat."""
    node = graph.reconstruct_node(backend, cameras=rig.names, rate=50.0, input_qos="reliable",
                                  sync_queue_size=3, window_timesteps=2)
    publisher = RigPublisher(graph, rig)
    collector = OutputCollector(graph, rig.names)
    publisher.wait_connected()
    stamp = publisher.publish(TIMES[0])
    wait_cycle(graph, node, stamp)

    def burst(count):
        for i in range(count):
            publisher.publish(TIMES[i % len(TIMES)], stamp_ns=stamp + (burst.n + i) * 10_000_000)
            graph.executor.spin_once(timeout_sec=0)
        burst.n += count
    burst.n = 1

    burst(150)
    rss_before = _rss_mib()
    burst(300)
    graph.spin_for(0.5)
    rss_after = _rss_mib()

    stats = node.sync.stats()
    assert all(len(s.queue) <= 3 for s in node.sync._states.values())
    assert all(len(s.arrivals) <= 3 for s in node.sync._states.values())  # arrival times
    assert sum(s.dropped for s in stats.values()) > 0
    assert node.worker.overruns > 0
    assert rss_after - rss_before < 64, f"RSS grew {rss_after - rss_before:.0f} MiB"
    camera = collector.wait_status(rig.names[0], lambda s: int(status_values(s)["dropped"]) > 0)
    assert camera is not None and float(status_values(camera)["input_rate_hz"]) > 10


def start_lossless_node(graph, rig, backend):
    """A lossless node at a rate too slow to matter, the rig's publisher connected, and
    the list its ``~/consumed`` acknowledgements arrive in (the latched 0 already there)."""
    node = graph.reconstruct_node(backend, cameras=rig.names, rate=0.01, input_qos="reliable",
                                  lossless=True, use_sim_time=False)
    publisher = RigPublisher(graph, rig)
    acks = []
    publisher.node.create_subscription(UInt64, "/reconstruct_node/consumed",
                                       lambda m: acks.append(m.data), LATCHED_QOS)
    publisher.wait_connected()
    assert graph.spin_until(lambda: acks == [0])
    return node, publisher, acks


def test_lossless_mode_reconstructs_every_snapshot_and_acknowledges(graph, rig, backend):
    """lossless:=true (for `dvlt-ros replay --lossless`): every complete snapshot is
    reconstructed in order however slow the rate, and ~/consumed counts every handled
    image, rejected ones included, only after the products of what it completed."""
    node, publisher, acks = start_lossless_node(graph, rig, backend)
    reports = []
    node.add_cycle_listener(lambda report, result: reports.append(report))

    sent = 0
    for t in TIMES[:3]:
        for name in rig.names:
            publisher.publish(t, cameras=[name])
            sent += 1
            assert graph.spin_until(lambda n=sent: acks[-1] == n), (acks, sent)
            # The image completing a snapshot is acknowledged after its cycle.
            assert len(reports) == (sent // 2)
    bad = Image(header=publisher.header(rig.names[0], stamp_of(2.0)), encoding="yuv422")
    publisher.images[rig.names[0]].publish(bad)
    assert graph.spin_until(lambda: acks[-1] == sent + 1)
    # A snapshot whose cycle fails (the backend knows no such view) is acknowledged too,
    # or the replay tool would wait for it until its timeout.
    for name in rig.names:
        publisher.publish(0.25, cameras=[name], stamp_ns=stamp_of(1.2))
    assert graph.spin_until(lambda: acks[-1] == sent + 3), acks
    assert node.problems.active("pipeline")[0].kind == "cycle_error"
    assert [r.stamp_ns for r in reports] == [stamp_of(t) for t in TIMES[:3]]
    assert acks == sorted(acks)


def test_burst_of_snapshots_is_published_complete_and_in_order(graph, rig, backend):
    """Lossless snapshots sent in one burst: the worker reconstructs each while the last
    one's outputs are published on the publishing thread. Every cycle's cloud, depth and
    confidence arrive, in cycle order, stamped with the source images' stamps; reports
    come in the same order and the last acknowledgement only after all of them."""
    collector = OutputCollector(graph, rig.names)
    node, publisher, acks = start_lossless_node(graph, rig, backend)
    reports = []
    node.add_cycle_listener(lambda report, result: reports.append((report.stamp_ns, acks[-1])))
    stamps = [publisher.publish(t) for t in TIMES]
    images = len(TIMES) * len(rig.names)
    assert graph.spin_until(lambda: acks[-1] == images, 60), acks
    assert graph.spin_until(lambda: len(collector.msgs["points"]) == len(TIMES), 10)

    def received(key):
        return [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                for m in collector.msgs[key]]

    assert [stamp for stamp, _ in reports] == stamps
    assert all(ack < images for _, ack in reports)  # each report before the last ack
    assert received("points") == stamps
    assert all(m.width > 0 for m in collector.msgs["points"])
    for name in rig.names:
        assert received(f"{name}/depth") == stamps
        assert received(f"{name}/confidence") == stamps
    assert acks == sorted(acks)


def test_no_acknowledgement_topic_without_lossless(graph, rig, backend):
    graph.reconstruct_node(backend, cameras=rig.names)
    probe = graph.create_node("probe")
    graph.spin_for(0.5)
    assert probe.count_publishers("/reconstruct_node/consumed") == 0


# ---------------------------------------------------------------------------------------
# The node as its own process: it ends cleanly, soon, whatever its cycle is doing.

LONG_IMG = 224
# What must never appear when the node ends: a traceback, C++ aborting a thread at
# interpreter exit, publishing into a shut-down context, any ERROR.
UNCLEAN = ("Traceback", "terminate called", "context is invalid", "[ERROR]")


@pytest.fixture(scope="module")
def long_checkpoint(tmp_path_factory, reference_dir):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt224"), reference_dir, LONG_IMG)


def _node_args(checkpoint, cameras, **params) -> list[str]:
    values = {"checkpoint": str(checkpoint), "device": "cpu", "input_qos": "reliable",
              "cameras": "[" + ",".join(cameras) + "]", "camera_timeout": 1e4, **params}
    return [arg for k, v in values.items() for arg in ("-p", f"{k}:={v}")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_long_cycle_ends_the_node_cleanly(graph, long_checkpoint, sig):
    """Ctrl-C (or launch's SIGTERM) while the model runs a cycle of 4 views x 64 loop
    steps (tens of seconds on a CPU): the node stops publishing, leaves the cycle behind
    after its grace period and exits 0 with nothing unclean in its output."""
    rig = default_rig(width=LONG_IMG, height=168, num_cameras=4)
    node = NodeProcess(_node_args(long_checkpoint, rig.names, num_steps=64, rate=10.0,
                                  window_timesteps=1, diagnostics_period=0.2))
    try:
        assert node.wait_for("model loaded", graph), node.output
        publisher = RigPublisher(graph, rig)
        collector = OutputCollector(graph, rig.names)
        publisher.wait_connected(timeout=60)
        publisher.publish(0.0)
        # The cycle took the snapshot (the camera's frame is "used") and is running.
        assert collector.wait_status(f"camera {rig.names[0]}",
                                     lambda s: status_values(s)["used"] == "1", 60)
        node.proc.send_signal(sig)
        # Far less than the cycle would take: the node does not wait for it.
        code = node.finish(timeout=15)
    finally:
        if node.proc.poll() is None:
            node.finish(timeout=0)
    assert code == 0, node.output
    assert "cycle 1:" not in node.output
    assert "stopping without waiting for the running cycle" in node.output
    for text in UNCLEAN:
        assert text not in node.output, node.output


_LAUNCHER = """
import subprocess, sys
child = subprocess.Popen(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT)
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_node_ends_with_its_launcher(long_checkpoint, tmp_path):
    """`ros2 launch` killed (or crashing): the node it started does not live on."""
    log = tmp_path / "node.log"
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(log), *node_command(), "--ros-args",
         *_node_args(long_checkpoint, ["cam0"])],
        stdout=subprocess.PIPE, text=True)
    node_pid = int(launcher.stdout.readline())
    try:
        deadline = time.monotonic() + 120
        while "model loaded" not in log.read_text() and time.monotonic() < deadline:
            assert not process_ended(node_pid), log.read_text()
            time.sleep(0.1)
        assert "model loaded" in log.read_text()
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 15
        while not process_ended(node_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_ended(node_pid), "the node outlived its launcher"
    finally:
        if not process_ended(node_pid):
            os.kill(node_pid, signal.SIGKILL)
    output = log.read_text()
    for text in UNCLEAN:
        assert text not in output, output
