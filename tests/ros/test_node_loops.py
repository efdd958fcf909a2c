"""reconstruct_node with ``loop_closure: true`` over real DDS: a ground-truth (unscaled, noisy)
loop through the textured room; ``map -> world_frame`` on /tf, the latched ``~/map_points``
(a late subscriber still gets it), ``~/map_trajectory``, loop markers, and ``~/reset``."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import rclpy
from nav_msgs.msg import Path
from node_harness import RigPublisher, RosGraph, stamp_of, wait_cycle
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.mapping import EncoderDescriber
from dvlt_core.model import DVLTModel
from dvlt_core.synthetic import default_rig
from dvlt_core.testing import load_deterministic_weights
from dvlt_ros.conversions.pointcloud import cloud_to_array
from dvlt_ros.conversions.tf import matrix_from_transform
from dvlt_ros.node_support.qos import LATCHED_QOS
from dvlt_ros.nodes.reconstruct_node import ReconstructNode

pytest.importorskip("gtsam")
IMG_SIZE = 112
SNAPSHOTS = 44


@pytest.fixture
def graph():
    g = RosGraph()
    yield g
    g.close()


def _describer(reference_dir):
    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return EncoderDescriber(model.eval(), IMG_SIZE)


def _latched(graph, kind, topic):
    """A new subscriber (after the fact) to a latched topic; returns its message list."""
    got = []
    graph.create_node(f"late_{topic.strip('/').replace('/', '_')}").create_subscription(
        kind, topic, got.append, LATCHED_QOS)
    return got


def test_map_tf_map_points_markers_and_reset(graph, reference_dir):
    rig = default_rig(160, 120, num_cameras=2)
    # 1.1 laps, 35 s: the end revisits the start beyond the 10 s temporal exclusion.
    times = [i * rig.trajectory.lap_time * 1.1 / SNAPSHOTS for i in range(SNAPSHOTS + 1)]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE)
    params = {"cameras": rig.names, "rate": 20.0, "input_qos": "reliable",
              "img_size": IMG_SIZE, "num_steps": 1, "window_timesteps": 2,
              "keyframe_min_spacing": 0.0, "camera_timeout": 1e4, "loop_closure": True,
              "loop_verify_per_cycle": 2}
    node = graph.add(ReconstructNode(
        backend=backend, describer=_describer(reference_dir), context=graph.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
    tf = []
    graph.create_node("tf_collector").create_subscription(
        TFMessage, "/tf", tf.append, 100)
    publisher = RigPublisher(graph, rig)
    publisher.wait_connected()
    for t in times[:SNAPSHOTS]:
        wait_cycle(graph, node, publisher.publish(t), timeout=60.0)
    graph.spin_for(0.5)
    stats = node.session.loop_stats
    assert stats.keyframes == SNAPSHOTS and stats.accepted >= 1

    # map -> dvlt_world on /tf at the cycle stamps: the session's correction.
    last = stamp_of(times[SNAPSHOTS - 1])
    corrections = [tr for msg in tf for tr in msg.transforms
                   if tr.header.frame_id == "map" and tr.child_frame_id == "dvlt_world"]
    assert len(corrections) == SNAPSHOTS
    newest = corrections[-1]
    assert newest.header.stamp.sec * 10**9 + newest.header.stamp.nanosec == last
    np.testing.assert_allclose(matrix_from_transform(newest),
                               node.session.map_from_world(), atol=1e-6)
    # Not metric, so the correction is a similarity; TF gets a proper rigid transform
    # (REP 105) that puts the newest reference camera where the map has it.
    assert not node.last_report.metric
    q = newest.transform.rotation
    assert np.linalg.norm([q.x, q.y, q.z, q.w]) == pytest.approx(1.0, abs=1e-9)
    map_from_world = matrix_from_transform(newest)
    rotation = map_from_world[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-9)
    world_from_camera = node.session.loop_map.keyframes[-1].poses[0][2]
    _, map_from_camera = node.session.map_path()[-1]
    np.testing.assert_allclose((map_from_world @ world_from_camera)[:3, 3],
                               map_from_camera[:3, 3], atol=1e-6)

    # Latched map outputs reach a subscriber that joins afterwards.
    points = _latched(graph, PointCloud2, "/reconstruct_node/map_points")
    trajectory = _latched(graph, Path, "/reconstruct_node/map_trajectory")
    loops = _latched(graph, MarkerArray, "/reconstruct_node/loop_closures")
    assert graph.spin_until(lambda: points and trajectory and loops, 10.0)
    cloud = cloud_to_array(points[-1])
    assert points[-1].header.frame_id == "map" and 0 < len(cloud) <= 1_000_000
    assert len(trajectory[-1].poses) == SNAPSHOTS
    lines = [m for m in loops[-1].markers if m.action == Marker.ADD]
    assert len(lines) >= 1 and all(m.ns == "loop_closures" for m in lines)

    # ~/reset clears the map; the next cycle starts a new one.
    client = graph.create_node("reset_client").create_client(Trigger, "/reconstruct_node/reset")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    graph.executor.spin_until_future_complete(future, timeout_sec=10.0)
    assert future.result().success
    assert graph.spin_until(lambda: len(cloud_to_array(points[-1])) == 0, 10.0)
    assert node.session.loop_stats.keyframes == 0 and node.session.map_path() == []
    wait_cycle(graph, node, publisher.publish(times[SNAPSHOTS]), timeout=60.0)
    assert node.session.loop_stats.keyframes == 1
    assert rclpy.ok(context=graph.context)


def _loop_node(graph, rig, backend, reference_dir) -> ReconstructNode:
    """A loop-closing node over ``rig``: one step, windows of two snapshots, every snapshot a
    keyframe, lossless input."""
    params = {"cameras": rig.names, "rate": 20.0, "input_qos": "reliable",
              "img_size": IMG_SIZE, "num_steps": 1, "window_timesteps": 2,
              "keyframe_min_spacing": 0.0, "camera_timeout": 1e4, "loop_closure": True}
    return graph.add(ReconstructNode(
        backend=backend, describer=_describer(reference_dir), context=graph.context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))


class _HeldBackend(GroundTruthUnscaledBackend):
    """Once ``hold`` is set, the next inference waits for ``release`` (a slow cycle):
    ``inside`` says it is waiting, ``timed_out`` that nobody released it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold, self.inside, self.release = (threading.Event() for _ in range(3))
        self.timed_out = False

    def infer(self, images, num_steps=None):
        if self.hold.is_set():
            self.hold.clear()
            self.inside.set()
            self.timed_out = not self.release.wait(30.0)
        return super().infer(images, num_steps)


def test_reset_answers_while_a_cycle_runs_and_clears_the_map_after_it(graph, reference_dir):
    """~/reset does not wait for the running inference: it answers while the cycle is
    still inside the backend; the worker clears the map when that cycle ends."""
    rig = default_rig(160, 120, num_cameras=1)
    times = [0.5 * i for i in range(5)]
    backend = _HeldBackend.for_rig(rig, times, img_size=IMG_SIZE)
    node = _loop_node(graph, rig, backend, reference_dir)
    points = _latched(graph, PointCloud2, "/reconstruct_node/map_points")
    client = graph.create_node("reset_client").create_client(Trigger, "/reconstruct_node/reset")
    publisher = RigPublisher(graph, rig)
    publisher.wait_connected()
    assert client.wait_for_service(timeout_sec=10.0)
    for t in times[:3]:
        wait_cycle(graph, node, publisher.publish(t), timeout=60.0)
    assert node.session.loop_stats.keyframes == 3
    # The last cycle's spare-time verifications run the backend too: hold the next cycle's.
    assert node.worker.wait_idle(30.0)

    backend.hold.set()
    held_stamp = publisher.publish(times[3])
    assert graph.spin_until(backend.inside.is_set, 20.0)
    future = client.call_async(Trigger.Request())
    graph.executor.spin_until_future_complete(future, timeout_sec=20.0)
    # Answered while the cycle is still in the backend (nobody released it yet).
    assert future.done() and future.result().success
    assert not backend.release.is_set() and not backend.timed_out
    assert node.session.loop_stats.keyframes == 3  # not cleared under the running cycle

    backend.release.set()
    wait_cycle(graph, node, held_stamp, timeout=60.0)
    # The held cycle's keyframe went with the rest; the empty map is published after it.
    assert graph.spin_until(lambda: points and len(cloud_to_array(points[-1])) == 0, 10.0)
    assert node.session.loop_stats.keyframes == 0 and not backend.timed_out
    wait_cycle(graph, node, publisher.publish(times[4]), timeout=60.0)
    assert node.session.loop_stats.keyframes == 1


class _VerificationFails(GroundTruthUnscaledBackend):
    """Raises on a window made only of views it has seen before: loop verification (every
    live window brings a new snapshot). Like a backend out of memory on those windows."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._seen: set[bytes] = set()
        self.failures = 0

    def infer(self, images, num_steps=None):
        keys = {view.numpy().tobytes() for view in images[0]}
        if keys <= self._seen:
            self.failures += 1
            raise RuntimeError("out of memory")
        self._seen |= keys
        return super().infer(images, num_steps)


def test_a_failing_loop_verification_is_reported_and_the_map_still_published(graph,
                                                                            reference_dir):
    rig = default_rig(160, 120, num_cameras=1)
    # 1.1 laps in 40 snapshots: none at exactly a pose of the first lap (same images).
    snapshots = 40
    times = [i * rig.trajectory.lap_time * 1.1 / snapshots for i in range(snapshots)]
    backend = _VerificationFails.for_rig(rig, times, img_size=IMG_SIZE)
    node = _loop_node(graph, rig, backend, reference_dir)
    publisher = RigPublisher(graph, rig)
    publisher.wait_connected()
    for t in times:
        wait_cycle(graph, node, publisher.publish(t), timeout=60.0)
    assert backend.failures >= 1
    kinds = {p.kind for p in node.problems.active("pipeline")}
    assert "loop_closure_error" in kinds and "cycle_error" not in kinds
    trajectory = _latched(graph, Path, "/reconstruct_node/map_trajectory")
    assert graph.spin_until(lambda: trajectory and len(trajectory[-1].poses) == snapshots, 10.0)
    assert node.session.loop_stats.keyframes == snapshots
