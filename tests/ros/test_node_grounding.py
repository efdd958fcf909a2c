"""reconstruct_node grounded over real DDS: metric scale from the rig's TF baselines, from
odometry and from depth images, camera TF in ``odom`` (anchor tf), the nvblox contract of its
depth and camera_info, and sources that contradict each other (missing, partial and stale
TF and bad depth images: test_node_bad_inputs.py).

The robot is the demo's :class:`~dvlt_ros.cli.demo.SyntheticRigPublisher` (images,
CameraInfo, /tf_static, /tf, depth); the network is ``ground_truth_unscaled`` (the scene at a
random scale per window, with pose noise ``POSITION_NOISE`` m and ``ROTATION_NOISE_DEG`` per
view and 1 % depth noise per pixel). Tolerances follow from that noise:

* scale, rig: a baseline of ``b`` metres between two cameras with independent position noise
  sigma is measured to ``sqrt(2) sigma / b`` (relative); the default rig's shortest baseline
  (0.25 m) gives 1.1 %; with at least 3 pairs per window, medians and smoothing, 3 % (about
  3 sigma of one pair) bounds it;
* scale, odometry: the same over the motion between snapshots (0.15 m here): 1.9 % per
  motion; 6 % (3 sigma of one motion);
* scale, depth: the median ratio over >10^4 pixels of 1 % noise: far below 1 %; 1 % (the
  mm quantisation of 16UC1 at the scene's 1 to 5 m is 0.1 % or less);
* positions in odom (anchor tf): the scale error times the window's extent (at most about
  1 m from its centroid) plus 5 sigma of the pose noise; rotations: 3 sigma of the per-view
  rotation noise plus the alignment's rotation error from the position noise over the
  shortest baseline (``sqrt(2) sigma / 0.25 m``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from node_harness import (
    RELIABLE,
    OutputCollector,
    RosGraph,
    level,
    stamp_of,
    status_values,
    wait_cycle,
    world_points,
)
from rclpy.qos import QoSProfile, qos_check_compatible, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.geometry import TransformError
from dvlt_core.synthetic import default_rig
from dvlt_ros.cli.demo import SyntheticRigPublisher
from dvlt_ros.conversions.camera_info import intrinsics_from_camera_info
from dvlt_ros.conversions.image import array_to_image, image_to_array
from dvlt_ros.conversions.tf import (
    matrix_from_transform,
    ns_from_stamp,
    stamp_from_ns,
)
from dvlt_ros.node_support.health import WARN
from dvlt_ros.node_support.tf_listener import TfListener

# 168x126 is exactly the network canvas at img_size 168: depth maps align with the images.
NET_W, NET_H = 168, 126
INTERVAL = 0.5
POSITION_NOISE = 0.002
ROTATION_NOISE_DEG = 0.05
RIG_SCALE_TOL = 0.03
ODOMETRY_SCALE_TOL = 0.06
DEPTH_SCALE_TOL = 0.01
WINDOW_EXTENT_M = 1.0
SHORTEST_BASELINE_M = 0.25
ROTATION_TOL_DEG = (3 * ROTATION_NOISE_DEG * math.sqrt(3)
                    + math.degrees(math.sqrt(2) * POSITION_NOISE / SHORTEST_BASELINE_M))


@pytest.fixture
def graph():
    g = RosGraph()
    yield g
    g.close()


def _times(count: int) -> list[float]:
    return [i * INTERVAL for i in range(count)]


def _node(graph, rig, times, **params):
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=NET_W)
    return graph.reconstruct_node(
        backend, cameras=rig.names, rate=20.0, input_qos="reliable", img_size=NET_W,
        camera_timeout=1e4, window_timesteps=2, cloud_stride=2, **params)


def _robot(graph, node, rig, depth: bool = False) -> SyntheticRigPublisher:
    robot = SyntheticRigPublisher(rig, graph.context, depth=depth)
    graph.add(robot.node)
    assert graph.spin_until(lambda: robot.connected(node.tf is not None,
                                                    node.depth_inputs is not None), 20)
    return robot


def _drive(graph, node, robot, times) -> list[int]:
    stamps = []
    for t in times:
        stamps.append(robot.publish(t, node, graph.spin_until))
        wait_cycle(graph, node, stamps[-1])
    return stamps


def _depth_ratio(published: Image, truth: np.ndarray) -> float:
    """Median of published / true depth over the pixels valid in both."""
    depth = image_to_array(published).astype(np.float64)
    ok = np.isfinite(depth) & (depth > 0) & (truth > 0)
    return float(np.median(depth[ok] / truth[ok]))


def _camera_tf(collector, stamp, rig, name):
    """The node's TF of camera ``name`` at ``stamp`` (/tf also carries the robot's)."""
    frame = f"{rig.camera(name).optical_frame}_dvlt"

    def found():
        return [t for msg in collector.msgs["tf"] for t in msg.transforms
                if t.child_frame_id == frame and ns_from_stamp(t.header.stamp) == stamp]

    assert collector.graph.spin_until(found, 10), f"no TF for {frame} at {stamp}"
    return found()[-1]


class NvbloxLikeSubscriber:
    """Subscribes to a camera's depth and camera_info as nvblox's node does
    (``camera_<i>/depth/image`` and ``camera_<i>/depth/camera_info`` remapped to the node's
    topics, QoS ``input_qos``: SYSTEM_DEFAULT or SENSOR_DATA, exact-time pairs) and looks the
    depth frame up in TF (``global_frame`` -> depth ``frame_id`` at the image stamp)."""

    def __init__(self, graph, name: str, depth_topic: str, info_topic: str, qos) -> None:
        self.node = graph.create_node(name)
        self.depth: dict[int, Image] = {}
        self.info: dict[int, CameraInfo] = {}
        self.node.create_subscription(Image, depth_topic, lambda m: self._keep(self.depth, m),
                                      qos)
        self.node.create_subscription(CameraInfo, info_topic,
                                      lambda m: self._keep(self.info, m), qos)
        self.tf = TfListener(self.node)

    @staticmethod
    def _keep(store, msg) -> None:
        store[ns_from_stamp(msg.header.stamp)] = msg

    def pair(self, stamp_ns: int):
        """The exact-time (depth, camera_info) pair at ``stamp_ns``, or None."""
        if stamp_ns in self.depth and stamp_ns in self.info:
            return self.depth[stamp_ns], self.info[stamp_ns]
        return None


def _compatible(node, topic: str, subscription_qos) -> bool:
    infos = node.get_publishers_info_by_topic(topic)
    assert infos, f"nobody publishes {topic}"
    return all(qos_check_compatible(info.qos_profile, subscription_qos)[0].name != "ERROR"
               for info in infos)


# nvblox's default input_qos SYSTEM_DEFAULT as the RMW resolves it: reliable, volatile.
NVBLOX_SYSTEM_DEFAULT = QoSProfile(depth=10)


def test_rig_scale_anchored_in_odom_feeds_nvblox(graph):
    """scale_source rig + anchor tf: camera TF in odom, cloud and depth in metres match the
    scene; the depth/camera_info pairs satisfy what nvblox needs (exact stamps, frame_ids,
    sizes, QoS, TF of the depth frame in odom)."""
    rig = default_rig(width=NET_W, height=NET_H, num_cameras=3)
    times = _times(5)
    node = _node(graph, rig, times, scale_source="rig", anchor="tf", world_frame="odom")
    assert node.tf is not None and node.depth_inputs is None
    cam = rig.names[0]
    nvblox = NvbloxLikeSubscriber(graph, "nvblox_system_default",
                                  f"/reconstruct_node/{cam}/depth",
                                  f"/reconstruct_node/{cam}/camera_info", NVBLOX_SYSTEM_DEFAULT)
    sensor = NvbloxLikeSubscriber(graph, "nvblox_sensor_data",
                                  f"/reconstruct_node/{cam}/depth",
                                  f"/reconstruct_node/{cam}/camera_info",
                                  qos_profile_sensor_data)
    collector = OutputCollector(graph, rig.names)
    robot = _robot(graph, node, rig)
    stamps = _drive(graph, node, robot, times)
    collector.wait_products(stamps[-1], rig.names)

    report = node.last_report
    assert report.metric and report.units == "m"
    assert (report.scale_source, report.anchor) == ("rig", "tf")
    assert report.scale_constraints >= 3
    tolerance = RIG_SCALE_TOL * WINDOW_EXTENT_M + 5 * POSITION_NOISE
    for stamp, t in zip(stamps[1:], times[1:], strict=True):
        for name in rig.names:
            tr = _camera_tf(collector, stamp, rig, name)
            assert tr.header.frame_id == "odom"
            pose = matrix_from_transform(tr)
            truth = rig.camera_pose(name, t)
            assert np.linalg.norm(pose[:3, 3] - truth[:3, 3]) < tolerance
            angle = np.degrees(np.arccos(np.clip(
                (np.trace(pose[:3, :3].T @ truth[:3, :3]) - 1) / 2, -1, 1)))
            assert angle < ROTATION_TOL_DEG
    t, stamp = times[-1], stamps[-1]
    for name in rig.names:
        ratio = _depth_ratio(collector.stamped(f"{name}/depth", stamp), rig.render(name, t).depth)
        assert abs(ratio - 1) < RIG_SCALE_TOL, (name, ratio)

    # nvblox: every depth image has a camera_info of the same stamp, frame and size, its
    # frame is in TF under odom at that stamp, and back-projecting it with that K and pose
    # gives the scene's points.
    assert graph.spin_until(lambda: all(s.pair(stamp) for s in (nvblox, sensor)), 10)
    for subscriber in (nvblox, sensor):
        for key in stamps[1:]:
            pair = subscriber.pair(key)
            assert pair is not None, f"no depth/camera_info pair at {key}"
            depth_msg, info = pair
            assert depth_msg.encoding == "32FC1"  # REP 118: metres
            assert depth_msg.header.frame_id == info.header.frame_id \
                == f"{rig.camera(cam).optical_frame}_dvlt"
            assert (depth_msg.width, depth_msg.height) == (info.width, info.height)
    assert _compatible(nvblox.node, f"/reconstruct_node/{cam}/depth", NVBLOX_SYSTEM_DEFAULT)
    assert _compatible(nvblox.node, f"/reconstruct_node/{cam}/camera_info",
                       NVBLOX_SYSTEM_DEFAULT)
    assert _compatible(sensor.node, f"/reconstruct_node/{cam}/depth", qos_profile_sensor_data)
    depth_msg, info = nvblox.pair(stamp)

    def in_tf():
        try:
            nvblox.tf.lookup("odom", depth_msg.header.frame_id, stamp)
        except TransformError:
            return False
        return True

    assert graph.spin_until(in_tf, 10)
    odom_from_depth = nvblox.tf.lookup("odom", depth_msg.header.frame_id, stamp)
    view = rig.render(cam, t)
    points = world_points(image_to_array(depth_msg).astype(np.float64),
                          intrinsics_from_camera_info(info), odom_from_depth)
    expected = world_points(view.depth, view.k, view.c2w)
    ok = (view.depth > 0) & np.isfinite(points).all(axis=2)
    errors = np.linalg.norm(points[ok] - expected[ok], axis=1)
    assert np.median(errors) < RIG_SCALE_TOL * float(np.median(view.depth[ok])) + tolerance


def _steps(positions: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(positions, axis=0), axis=1)


def _path_positions(collector, graph, count: int) -> np.ndarray:
    assert graph.spin_until(lambda: collector.last("trajectory") is not None
                            and len(collector.last("trajectory").poses) == count, 10)
    return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z]
                     for p in collector.last("trajectory").poses])


def test_odometry_scale_for_a_single_camera(graph):
    """scale_source odometry, one camera, the node's own world: the path's steps are metres."""
    rig = default_rig(width=NET_W, height=NET_H, num_cameras=1)
    times = _times(8)
    node = _node(graph, rig, times, scale_source="odometry")
    collector = OutputCollector(graph, rig.names)
    robot = _robot(graph, node, rig)
    stamps = _drive(graph, node, robot, times)
    collector.wait_products(stamps[-1], rig.names)
    report = node.last_report
    assert report.metric and report.scale_source == "odometry" and report.anchor == "chain"
    # The first window has one snapshot (no motion): its path step is up to scale.
    steps = _steps(_path_positions(collector, graph, len(times)))[1:]
    truth = _steps(np.array([rig.camera_pose(rig.names[0], t)[:3, 3] for t in times]))[1:]
    np.testing.assert_allclose(steps, truth,
                               atol=5 * math.sqrt(2) * POSITION_NOISE, rtol=ODOMETRY_SCALE_TOL)
    name = rig.names[0]
    ratio = _depth_ratio(collector.stamped(f"{name}/depth", stamps[-1]),
                         rig.render(name, times[-1]).depth)
    assert abs(ratio - 1) < ODOMETRY_SCALE_TOL
    status = collector.wait_status(": pipeline", lambda s: status_values(s).get(
        "scale_source") == "odometry")
    assert status is not None
    values = status_values(status)
    assert values["anchor"] == "chain" and float(values["metres_per_unit"]) > 0


def test_depth_scale(graph):
    """scale_source depth from registered 16UC1 depth: metric products, depth counted."""
    rig = default_rig(width=NET_W, height=NET_H, num_cameras=2)
    times = _times(4)
    node = _node(graph, rig, times, scale_source="depth")
    assert node.depth_inputs is not None
    collector = OutputCollector(graph, rig.names)
    robot = _robot(graph, node, rig, depth=True)
    reports = []
    node.add_cycle_listener(lambda report, result: reports.append(report))
    stamps = _drive(graph, node, robot, times[:3])
    # The first snapshot's depth came before any colour image: it waited and was used.
    assert reports[0].metric and reports[0].scale_source == "depth"
    report = node.last_report
    assert report.metric and report.scale_source == "depth"
    for name in rig.names:
        collector.wait_products(stamps[-1], rig.names)
        ratio = _depth_ratio(collector.stamped(f"{name}/depth", stamps[-1]),
                             rig.render(name, times[2]).depth)
        assert abs(ratio - 1) < DEPTH_SCALE_TOL, (name, ratio)

    stamps += _drive(graph, node, robot, times[3:])
    assert node.last_report.metric
    received = str(len(rig.names) * len(times))
    status = collector.wait_status(
        ": pipeline", lambda s: status_values(s).get("depth_received") == received)
    assert status is not None and status_values(status)["depth_rejected"] == "0"
    assert status_values(status)["depth_dropped_before_first_image"] == "0"


def test_auto_reports_contradictory_sources(graph):
    """scale_source auto with a depth sensor 30 % off (a wrong unit or calibration): the
    rig scale is used (first in auto's order) and the disagreement is reported."""
    rig = default_rig(width=NET_W, height=NET_H, num_cameras=2)
    times = _times(4)
    node = _node(graph, rig, times, scale_source="auto")
    collector = OutputCollector(graph, rig.names)
    robot = _robot(graph, node, rig)
    depth_node = graph.create_node("miscalibrated_depth")
    depth_pubs = {n: depth_node.create_publisher(Image, f"{n}/depth/image_raw", RELIABLE)
                  for n in rig.names}
    assert graph.spin_until(lambda: all(p.get_subscription_count() for p in
                                        depth_pubs.values()), 10)
    stamps = []
    for t in times:
        stamp = stamp_of(t)
        for name, pub in depth_pubs.items():
            metres = (1.3 * rig.render(name, t).depth).astype(np.float32)
            pub.publish(array_to_image(metres, "32FC1", Header(
                stamp=stamp_from_ns(stamp), frame_id=rig.camera(name).optical_frame)))
        expected = len(depth_pubs) * (len(stamps) + 1)
        assert graph.spin_until(lambda e=expected: node.depth_inputs.received >= e, 10)
        stamps.append(robot.publish(t, node, graph.spin_until))
        wait_cycle(graph, node, stamps[-1])
    report = node.last_report
    assert report.metric and report.scale_source == "rig"
    assert "disagrees with depth" in report.grounding
    status = collector.wait_status(": pipeline", lambda s: level(s) == WARN
                                   and "problem: scale_conflict" in status_values(s))
    assert status is not None
    collector.wait_products(stamps[-1], rig.names)
    name = rig.names[0]
    ratio = _depth_ratio(collector.stamped(f"{name}/depth", stamps[-1]),
                         rig.render(name, times[-1]).depth)
    assert abs(ratio - 1) < RIG_SCALE_TOL
