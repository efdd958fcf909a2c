"""Rigid transforms <-> geometry_msgs/TransformStamped and tf2_msgs/TFMessage."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, TransformStamped
from tf2_msgs.msg import TFMessage

from dvlt_core.geometry import rigid_from_translation_quaternion, rotation_to_quaternion


def stamp_from_ns(nanoseconds: int) -> Time:
    """builtin_interfaces/Time from integer nanoseconds."""
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def ns_from_stamp(stamp: Time) -> int:
    """Integer nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


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
    q = rotation_to_quaternion(np.asarray(parent_to_child[:3, :3], dtype=np.float64))
    rot = msg.transform.rotation
    rot.x, rot.y, rot.z, rot.w = (float(v) for v in q)
    return msg


def matrix_from_transform(msg: TransformStamped) -> np.ndarray:
    """4x4 matrix of a TransformStamped (pose of the child in the parent frame)."""
    t, r = msg.transform.translation, msg.transform.rotation
    return rigid_from_translation_quaternion((t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


def pose_from_matrix(matrix: np.ndarray) -> Pose:
    """geometry_msgs/Pose of a 4x4 matrix."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in matrix[:3, 3])
    q = rotation_to_quaternion(np.asarray(matrix[:3, :3], dtype=np.float64))
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        float(v) for v in q
    )
    return pose


def tf_message(transforms: list[TransformStamped]) -> TFMessage:
    """A TFMessage carrying ``transforms``, as published on /tf and /tf_static."""
    return TFMessage(transforms=list(transforms))
