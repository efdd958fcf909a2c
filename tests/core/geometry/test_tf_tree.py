"""The transform tree: chaining, interpolation in time, bounded history, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvlt_core.geometry import (
    ExtrapolationError,
    FrameNotFoundError,
    NotConnectedError,
    TfTree,
    TransformError,
    rigid_from_translation_quaternion,
    rotation_to_quaternion,
    slerp,
)

S = 1_000_000_000  # ns per second


def _yaw(angle: float, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    return rigid_from_translation_quaternion(
        translation, (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2)))


@pytest.fixture()
def tree() -> TfTree:
    """odom -> base_link moving 2 m and turning 0.4 rad in 1 s; a static camera mount."""
    tree = TfTree(max_interval_ns=S)
    tree.set_transform("base_link", "cam_optical", _yaw(0.0, (0.5, 0.0, 0.2)))
    tree.set_transform("/odom", "base_link", _yaw(0.0), 0)
    tree.set_transform("odom", "base_link", _yaw(0.4, (2.0, 0.0, 0.0)), S)
    return tree


def test_chains_static_and_interpolated_edges(tree):
    root, root_from_cam = tree.lookup_root("cam_optical", S // 2)
    assert root == "odom"
    expected = _yaw(0.2, (1.0, 0.0, 0.0)) @ _yaw(0.0, (0.5, 0.0, 0.2))
    np.testing.assert_allclose(root_from_cam, expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("base_link", "cam_optical", 123), expected
                               @ np.linalg.inv(expected) @ _yaw(0.0, (0.5, 0.0, 0.2)),
                               atol=1e-12)
    odom_in_cam = tree.lookup("/cam_optical", "odom", S // 2)
    np.testing.assert_allclose(odom_in_cam, np.linalg.inv(expected), atol=1e-12)
    assert tree.frames == {"odom", "base_link", "cam_optical"}


def test_never_extrapolates_and_says_which_way(tree):
    with pytest.raises(ExtrapolationError, match=r"future.*1\.000 s earlier"):
        tree.lookup("odom", "cam_optical", 2 * S)
    with pytest.raises(ExtrapolationError, match="past"):
        tree.lookup("odom", "cam_optical", -1)
    tree.set_transform("odom", "base_link", _yaw(0.5), 3 * S)
    with pytest.raises(ExtrapolationError, match=r"2\.000 s gap"):
        tree.lookup("odom", "base_link", 2 * S)


def test_nearest_sample_within_tolerance():
    tree = TfTree(tolerance_ns=S // 10)
    tree.set_transform("odom", "base_link", _yaw(0.3), 5 * S)
    np.testing.assert_allclose(tree.lookup("odom", "base_link", 5 * S + S // 20), _yaw(0.3))
    with pytest.raises(ExtrapolationError):
        tree.lookup("odom", "base_link", 5 * S + S // 5)


def test_bounded_history_drops_old_samples():
    tree = TfTree(cache_time_ns=2 * S)
    for second in range(10):
        tree.set_transform("odom", "base_link", _yaw(0.1 * second), second * S)
    tree.lookup("odom", "base_link", 8 * S)
    with pytest.raises(ExtrapolationError, match="past"):
        tree.lookup("odom", "base_link", 6 * S)


def test_out_of_order_and_repeated_samples():
    tree = TfTree(max_interval_ns=10 * S)
    tree.set_transform("odom", "base_link", _yaw(0.4), 2 * S)
    tree.set_transform("odom", "base_link", _yaw(0.0), 0)
    tree.set_transform("odom", "base_link", _yaw(0.2), 2 * S)  # replaces the sample at 2 s
    np.testing.assert_allclose(tree.lookup("odom", "base_link", S), _yaw(0.1), atol=1e-12)


def test_structure_errors(tree):
    with pytest.raises(FrameNotFoundError, match="'nowhere'"):
        tree.lookup("odom", "nowhere", 0)
    tree.set_transform("map", "other", np.eye(4))
    with pytest.raises(NotConnectedError, match="roots 'odom' and 'map'"):
        tree.lookup("odom", "other", 0)
    with pytest.raises(TransformError, match="two parents"):
        tree.set_transform("map", "base_link", np.eye(4), 0)
    with pytest.raises(TransformError, match="both as a static"):
        tree.set_transform("odom", "base_link", np.eye(4))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(TransformError, match="finite 4x4"):
        tree.set_transform("odom", "x", bad, 0)
    tree.clear()
    assert tree.frames == set()


def test_slerp_follows_the_shorter_arc():
    q0 = rotation_to_quaternion(_yaw(0.0)[:3, :3])
    q1 = rotation_to_quaternion(_yaw(1.0)[:3, :3])
    for a in (0.0, 0.25, 0.5, 1.0):
        np.testing.assert_allclose(slerp(q0, q1, a),
                                   rotation_to_quaternion(_yaw(a)[:3, :3]), atol=1e-12)
    np.testing.assert_allclose(slerp(q0, -q1, 0.5), slerp(q0, q1, 0.5), atol=1e-12)
    q_near = rotation_to_quaternion(_yaw(1e-4)[:3, :3])
    np.testing.assert_allclose(np.linalg.norm(slerp(q0, q_near, 0.3)), 1.0, atol=1e-15)


def test_clear_can_keep_the_static_edges(tree):
    tree.clear(keep_static=True)
    assert tree.frames == {"base_link", "cam_optical"}
    np.testing.assert_allclose(tree.lookup("base_link", "cam_optical", 7), _yaw(0.0, (0.5, 0, 0.2)))
    with pytest.raises(FrameNotFoundError):
        tree.lookup("odom", "cam_optical", 0)


def test_frames_joined_by_static_edges_need_no_motion_sample(tree):
    """tf2 evaluates only the edges below the lowest common ancestor: two cameras on one
    mount are related at any stamp, even one the moving odom edge does not cover."""
    tree.set_transform("base_link", "depth_optical", _yaw(0.1, (0.5, 0.05, 0.2)))
    expected = np.linalg.inv(_yaw(0.0, (0.5, 0.0, 0.2))) @ _yaw(0.1, (0.5, 0.05, 0.2))
    np.testing.assert_allclose(tree.lookup("cam_optical", "depth_optical", 50 * S), expected,
                               atol=1e-12)
    with pytest.raises(ExtrapolationError):
        tree.lookup("odom", "depth_optical", 50 * S)
