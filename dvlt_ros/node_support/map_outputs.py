"""Publishers of the loop-corrected map (``loop_closure: true``, docs/node.md).

``~/map_points`` (PointCloud2 x, y, z, rgb, confidence in ``map_frame``, latched: after each
accepted loop, every ``MAP_POINTS_EVERY`` keyframes and after a reset), ``~/map_trajectory``
(nav_msgs/Path of the reference camera at every keyframe, latched), ``~/loop_closures``
(MarkerArray: one line per accepted loop between its keyframes' reference cameras, latched)
and ``map_frame -> world_frame`` on ``/tf`` at each cycle's stamp.
"""

from __future__ import annotations

import numpy as np
from nav_msgs.msg import Path
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from dvlt_ros.conversions.markers import frusta_markers
from dvlt_ros.conversions.path import path_message
from dvlt_ros.conversions.pointcloud import points_to_cloud
from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped
from dvlt_ros.node_support.qos import LATCHED_QOS
from dvlt_ros.pipeline.session import ReconstructionSession

#: ``~/map_points`` is also refreshed every this many keyframes (it grows each cycle; the
#: whole map every cycle would cost more than the cycle's own cloud).
MAP_POINTS_EVERY = 10
LOOP_EDGE = np.array([[0, 1]])


class MapPublishers:
    """The map's topics; ``tf``: the node's /tf publisher."""

    def __init__(self, node, map_frame: str, world_frame: str, tf) -> None:
        self.map_frame = map_frame
        self.world_frame = world_frame
        self.tf = tf
        self.points = node.create_publisher(PointCloud2, "~/map_points", LATCHED_QOS)
        self.trajectory = node.create_publisher(Path, "~/map_trajectory", LATCHED_QOS)
        self.loops = node.create_publisher(MarkerArray, "~/loop_closures", LATCHED_QOS)

    def publish(self, session: ReconstructionSession, stamp_ns: int, closed: bool) -> None:
        """After a cycle (and its loop verification): TF, trajectory, loops; the cloud
        when a loop was ``closed`` or every ``MAP_POINTS_EVERY`` keyframes."""
        loop_map = session.loop_map
        map_from_world = session.map_from_world()
        if loop_map is None or map_from_world is None:
            return
        stamp = stamp_from_ns(stamp_ns)
        header = Header(stamp=stamp, frame_id=self.map_frame)
        self.tf.publish(tf_message([transform_stamped(map_from_world, self.map_frame,
                                                      self.world_frame, stamp)]))
        self.trajectory.publish(path_message(header, session.map_path()))
        if closed or loop_map.closer.counts.keyframes % MAP_POINTS_EVERY == 1:
            self.publish_points(session, header)
            self.loops.publish(frusta_markers(
                header, [(np.stack(pair), LOOP_EDGE) for pair in loop_map.loops()],
                namespace="loop_closures"))

    def publish_points(self, session: ReconstructionSession, header: Header) -> None:
        loop_map = session.loop_map
        epoch = loop_map.epoch if loop_map is not None else -1
        points, colors = session.map_cloud.arrays(epoch)
        self.points.publish(points_to_cloud(points, colors,
                                            session.map_cloud.confidence(epoch), header))

    def publish_reset(self, stamp_ns: int) -> None:
        """An empty map cloud and no loop markers (the map was cleared)."""
        header = Header(stamp=stamp_from_ns(stamp_ns), frame_id=self.map_frame)
        empty = np.zeros((0, 3), np.float32)
        self.points.publish(points_to_cloud(empty, np.zeros((0, 3), np.uint8),
                                            np.zeros(0, np.float32), header))
        self.trajectory.publish(path_message(header, []))
        self.loops.publish(frusta_markers(header, [], namespace="loop_closures"))
