"""Rigid transforms <-> geometry_msgs/TransformStamped and tf2_msgs/TFMessage."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, TransformStamped
from tf2_msgs.msg import TFMessage


def stamp_from_ns(nanoseconds: int) -> Time:
    """builtin_interfaces/Time from integer nanoseconds."""
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def ns_from_stamp(stamp: Time) -> int:
    """Integer nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix (Shepperd's method)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    diag = np.array([r[0, 0], r[1, 1], r[2, 2]])
    if trace >= diag.max():
        w = np.sqrt(max(1.0 + trace, 0.0)) / 2
        q = np.array([(r[2, 1] - r[1, 2]), (r[0, 2] - r[2, 0]), (r[1, 0] - r[0, 1]), 4 * w**2])
        q /= 4 * w
    else:
        i = int(np.argmax(diag))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = np.sqrt(max(1.0 + r[i, i] - r[j, j] - r[k, k], 0.0)) * 2
        q = np.empty(4)
        q[i] = s / 4
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
        q[3] = (r[k, j] - r[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def matrix_from_quaternion(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def transform_stamped(
    parent_to_child: np.ndarray, parent_frame: str, child_frame: str, stamp: Time
) -> TransformStamped:
    """TransformStamped for a 4x4 pose of ``child_frame`` expressed in ``parent_frame``."""
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent_frame
    msg.child_frame_id = child_frame
    t = parent_to_child[:3, 3]
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(t[0]), float(t[1]), float(t[2])
    )
    q = quaternion_from_matrix(parent_to_child[:3, :3])
    rot = msg.transform.rotation
    rot.x, rot.y, rot.z, rot.w = (float(v) for v in q)
    return msg


def matrix_from_transform(msg: TransformStamped) -> np.ndarray:
    """4x4 matrix of a TransformStamped (pose of the child in the parent frame)."""
    out = np.eye(4)
    r = msg.transform.rotation
    out[:3, :3] = matrix_from_quaternion(np.array([r.x, r.y, r.z, r.w]))
    t = msg.transform.translation
    out[:3, 3] = (t.x, t.y, t.z)
    return out


def pose_from_matrix(matrix: np.ndarray) -> Pose:
    """geometry_msgs/Pose of a 4x4 matrix."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in matrix[:3, 3])
    q = quaternion_from_matrix(matrix[:3, :3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        float(v) for v in q
    )
    return pose


def tf_message(transforms: list[TransformStamped]) -> TFMessage:
    """A TFMessage carrying ``transforms``, as published on /tf and /tf_static."""
    return TFMessage(transforms=list(transforms))
