"""The live TF listener over real DDS: static and stamped transforms from other nodes,
chained and interpolated; bad transforms reported and dropped; time going back."""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import RosGraph
from tf2_msgs.msg import TFMessage

from dvlt_core.geometry import ExtrapolationError, FrameNotFoundError
from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped
from dvlt_ros.node_support.tf_listener import TF_QOS, TF_STATIC_QOS, TfListener

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _pose(x: float, yaw: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[0, 3] = x
    return pose


@pytest.fixture
def graph():
    graph = RosGraph()
    yield graph
    graph.close()


def _publishers(graph):
    robot = graph.create_node("robot_tf")
    return (robot.create_publisher(TFMessage, "/tf", TF_QOS),
            robot.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS))


def test_static_and_stamped_transforms_are_chained_and_interpolated(graph):
    tf, tf_static = _publishers(graph)
    mount = _pose(0.3, 0.2)
    # Published before the listener exists: /tf_static is latched (transient local).
    tf_static.publish(tf_message([transform_stamped(mount, "base_link", "cam_optical",
                                                    stamp_from_ns(0))]))
    problems = []
    listener = TfListener(graph.create_node("listener"), on_problem=problems.append)
    assert listener.backend in ("tf2_ros", "dvlt_core.TfTree")
    for i, x in enumerate((0.0, 1.0, 2.0)):
        tf.publish(tf_message([transform_stamped(_pose(x), "odom", "base_link",
                                                 stamp_from_ns(T0 + i * S))]))

    def ready():
        try:
            listener.lookup("odom", "cam_optical", T0 + 2 * S)
        except (ExtrapolationError, FrameNotFoundError):
            return False
        return True

    assert graph.spin_until(ready, 10)
    np.testing.assert_allclose(listener.lookup("odom", "cam_optical", T0 + S // 2),
                               _pose(0.5) @ mount, atol=1e-9)
    with pytest.raises(ExtrapolationError):
        listener.lookup("odom", "cam_optical", T0 + 3 * S)
    with pytest.raises(FrameNotFoundError):
        listener.lookup("odom", "nowhere", T0)
    assert {"odom", "base_link", "cam_optical"} <= listener.frames
    assert problems == []


def test_bad_transforms_are_reported_and_time_going_back_starts_over(graph):
    tf, tf_static = _publishers(graph)
    problems = []
    listener = TfListener(graph.create_node("listener"), cache_time_s=2.0,
                          on_problem=problems.append, use_tf2_ros=False)
    tf_static.publish(tf_message([transform_stamped(_pose(0.3), "base_link", "cam",
                                                    stamp_from_ns(0))]))
    tf.publish(tf_message([transform_stamped(_pose(1.0), "odom", "base_link",
                                             stamp_from_ns(T0 + 10 * S)),
                           transform_stamped(_pose(1.0), "map", "base_link",
                                             stamp_from_ns(T0 + 10 * S))]))
    assert graph.spin_until(lambda: problems and "cam" in listener.frames, 10)
    assert "two parents" in problems[0]
    np.testing.assert_allclose(listener.lookup("odom", "cam", T0 + 10 * S),
                               _pose(1.0) @ _pose(0.3), atol=1e-12)
    # A looping bag: stamps far behind the history start a new timeline; the static
    # mount still holds.
    tf.publish(tf_message([transform_stamped(_pose(5.0), "odom", "base_link",
                                             stamp_from_ns(T0))]))

    def restarted():
        try:
            return np.allclose(listener.lookup("odom", "cam", T0), _pose(5.0) @ _pose(0.3))
        except ExtrapolationError:
            return False

    assert graph.spin_until(restarted, 10)
    with pytest.raises(ExtrapolationError):
        listener.lookup("odom", "cam", T0 + 10 * S)
