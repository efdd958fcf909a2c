"""Camera trajectories as nav_msgs/Path."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import Header

from dvlt_ros.conversions.tf import pose_from_matrix, stamp_from_ns


def path_message(header: Header, poses: Iterable[tuple[int, np.ndarray]]) -> Path:
    """A Path in ``header.frame_id`` from (stamp in nanoseconds, 4x4 pose) pairs, oldest
    first; each PoseStamped carries its own stamp."""
    msg = Path(header=header)
    for stamp_ns, pose in poses:
        entry = PoseStamped()
        entry.header.frame_id = header.frame_id
        entry.header.stamp = stamp_from_ns(stamp_ns)
        entry.pose = pose_from_matrix(pose)
        msg.poses.append(entry)
    return msg
