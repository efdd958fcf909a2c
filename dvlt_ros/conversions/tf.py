"""Rigid transforms <-> geometry_msgs/TransformStamped and tf2_msgs/TFMessage."""

from __future__ import annotations

from collections.abc import Sequence

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
    return transforms_stamped([(parent_to_child, child_frame, stamp)], parent_frame)[0]


def transforms_stamped(
    children: Sequence[tuple[np.ndarray, str, Time]], parent_frame: str
) -> list[TransformStamped]:
    """One TransformStamped per (4x4 pose in ``parent_frame``, child frame, stamp), with
    the quaternions of all poses computed in one call."""
    if not children:
        return []
    matrices = np.stack([np.asarray(m, dtype=np.float64) for m, _, _ in children])
    quaternions = rotation_to_quaternion(matrices[:, :3, :3]).tolist()
    translations = matrices[:, :3, 3].tolist()
    out = []
    for (_, child_frame, stamp), t, q in zip(children, translations, quaternions, strict=True):
        msg = TransformStamped()
        msg.header.stamp = stamp
        msg.header.frame_id = parent_frame
        msg.child_frame_id = child_frame
        translation, rotation = msg.transform.translation, msg.transform.rotation
        translation.x, translation.y, translation.z = t
        rotation.x, rotation.y, rotation.z, rotation.w = q
        out.append(msg)
    return out


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
