"""Publishers of the reconstruction node and the conversion of a cycle's products.

Topics (``~`` is the node's name): ``~/points`` (PointCloud2 x, y, z, rgb, confidence in
``world_frame``), ``~/<camera>/depth`` and ``~/<camera>/confidence`` (32FC1 in the
camera's TF child frame), ``~/<camera>/camera_info`` (intrinsics of that depth image,
latched), ``~/trajectory`` (nav_msgs/Path, latched), ``~/frusta`` (MarkerArray,
latched), ``/tf`` and ``/diagnostics``. Everything is stamped with the source image stamp.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from dvlt_ros.conversions.camera_info import camera_info_from_intrinsics
from dvlt_ros.conversions.image import array_to_image
from dvlt_ros.conversions.markers import frusta_markers
from dvlt_ros.conversions.path import path_message
from dvlt_ros.conversions.pointcloud import points_to_cloud
from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transforms_stamped
from dvlt_ros.node_support.qos import DIAGNOSTICS_QOS, LATCHED_QOS, OUTPUT_QOS
from dvlt_ros.pipeline.engine import CycleResult

# tf2's listeners subscribe to /tf reliable, keep last 100.
TF_QOS_DEPTH = 100


class CameraPublishers:
    """depth, confidence and camera_info of one camera."""

    def __init__(self, node, label: str) -> None:
        self.depth = node.create_publisher(Image, f"~/{label}/depth", OUTPUT_QOS)
        self.confidence = node.create_publisher(Image, f"~/{label}/confidence", OUTPUT_QOS)
        self.camera_info = node.create_publisher(CameraInfo, f"~/{label}/camera_info",
                                                 LATCHED_QOS)


class OutputPublishers:
    """All publishers of the node; :meth:`publish` sends one cycle's products."""

    def __init__(self, node, cameras: Sequence[str], world_frame: str) -> None:
        self.world_frame = world_frame
        self.camera_index = {label: i for i, label in enumerate(cameras)}
        self.points = node.create_publisher(PointCloud2, "~/points", OUTPUT_QOS)
        self.cameras = {label: CameraPublishers(node, label) for label in cameras}
        self.trajectory = node.create_publisher(Path, "~/trajectory", LATCHED_QOS)
        self.frusta = node.create_publisher(MarkerArray, "~/frusta", LATCHED_QOS)
        self.tf = node.create_publisher(TFMessage, "/tf", TF_QOS_DEPTH)
        self.diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics",
                                                 DIAGNOSTICS_QOS)
    def publish(self, result: CycleResult,
                path: Sequence[tuple[int, np.ndarray]] | None = None) -> int:
        """Publish every product of ``result`` and, when given, the reference camera's
        ``path`` (stamp ns, world_from_camera) as ``~/trajectory``; return the number of
        cloud points."""
        header = Header(stamp=stamp_from_ns(result.stamp_ns), frame_id=self.world_frame)
        cloud = result.cloud
        self.points.publish(points_to_cloud(cloud.points, cloud.colors, cloud.confidence, header))
        for depth in result.depths:
            pubs = self.cameras.get(depth.camera)
            if pubs is None:
                continue
            image_header = Header(stamp=stamp_from_ns(depth.stamp_ns), frame_id=depth.frame_id)
            pubs.depth.publish(array_to_image(depth.depth, "32FC1", image_header))
            pubs.confidence.publish(array_to_image(depth.confidence, "32FC1", image_header))
            model = depth.camera_model
            pubs.camera_info.publish(
                camera_info_from_intrinsics(model.k, model.width, model.height, image_header)
            )
        if result.poses:
            self.tf.publish(tf_message(transforms_stamped(
                [(pose.world_from_camera, pose.child_frame_id, stamp_from_ns(pose.stamp_ns))
                 for pose in result.poses], self.world_frame)))
        if path is not None:
            self.trajectory.publish(path_message(header, path))
        self.frusta.publish(frusta_markers(
            header,
            [(f.vertices, f.edges) for f in result.frusta],
            colors=[self.camera_index.get(f.camera, 0) for f in result.frusta],
        ))
        return len(cloud)
