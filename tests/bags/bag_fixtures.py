"""A small recorded robot bag for the converter and rosbag-source tests.

The synthetic rig (:mod:`dvlt_core.synthetic`) drives two cameras around its scene; the bag
holds their rectified images, ``camera_info``, registered depth (uint16 millimetres on one
camera, float32 metres on the other, a few ms off the image stamps), ``/tf``, ``/tf_static`` and
``/odom``. Import it after ``pytest.importorskip("rosbags")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from dvlt_core.geometry import rotation_to_quaternion
from dvlt_core.synthetic import SyntheticRig, default_rig
from dvlt_ros.bags.decode import CameraTopics

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
STAMPS = [0.5 + 0.2 * i for i in range(6)]


def _header(t: float, frame: str):
    sec = int(t)
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9)),
        frame_id=frame)


def _tf(parent: str, child: str, pose: np.ndarray, t: float):
    q = np.asarray(rotation_to_quaternion(pose[:3, :3]), dtype=np.float64)
    return T["geometry_msgs/msg/TransformStamped"](
        header=_header(t, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](*pose[:3, 3]),
            rotation=T["geometry_msgs/msg/Quaternion"](*q)))


def _image(array: np.ndarray, encoding: str, t: float, frame: str):
    h, w = array.shape[:2]
    data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    return T["sensor_msgs/msg/Image"](header=_header(t, frame), height=h, width=w,
                                      encoding=encoding, is_bigendian=0,
                                      step=data.size // h, data=data)


def _info(k: np.ndarray, w: int, h: int, t: float, frame: str):
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](
        header=_header(t, frame), height=h, width=w, distortion_model="plumb_bob",
        d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1),
        p=np.hstack([k, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0, roi=roi)


def _odometry(pose: np.ndarray, t: float):
    q = np.asarray(rotation_to_quaternion(pose[:3, :3]), dtype=np.float64)
    zero3 = T["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0)
    return T["nav_msgs/msg/Odometry"](
        header=_header(t, "odom"), child_frame_id="base_link",
        pose=T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](*pose[:3, 3]),
                                             orientation=T["geometry_msgs/msg/Quaternion"](*q)),
            covariance=np.zeros(36)),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](linear=zero3, angular=zero3),
            covariance=np.zeros(36)))


def write_robot_bag(path: Path) -> SyntheticRig:
    """Write a bag with 2 cameras (uint16-mm and float32-m depth), /tf, /tf_static and
    odometry at ``path`` (a new rosbag2 folder); return the rig it recorded."""
    rig = default_rig(width=48, height=36, num_cameras=2)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}

        def write(topic, msgtype, msg, t):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(conns[topic], int(t * 1e9), TS.serialize_cdr(msg, msgtype))

        static = [_tf("base_link", rig.camera(n).optical_frame, rig.camera(n).base_from_camera,
                      0.0) for n in rig.names]
        write("/tf_static", "tf2_msgs/msg/TFMessage", T["tf2_msgs/msg/TFMessage"](static), 0.0)
        for i in range(15):  # poses at 10 Hz, bracketing every image
            t = 0.3 + 0.1 * i
            msg = T["tf2_msgs/msg/TFMessage"]([_tf("map", "base_link", rig.world_from_base(t), t)])
            write("/tf", "tf2_msgs/msg/TFMessage", msg, t)
            write("/odom", "nav_msgs/msg/Odometry", _odometry(rig.world_from_base(t), t), t)
        for t in STAMPS:
            for c, name in enumerate(rig.names):
                cam, view = rig.camera(name), rig.render(name, t)
                frame = cam.optical_frame
                write(f"/{name}/camera_info", "sensor_msgs/msg/CameraInfo",
                      _info(cam.k, cam.width, cam.height, t, frame), t)
                write(f"/{name}/image_rect", "sensor_msgs/msg/Image",
                      _image(view.image, "rgb8", t, frame), t)
                if c == 0:
                    depth = _image(np.round(view.depth * 1000).astype(np.uint16), "16UC1",
                                   t + 0.004, frame)
                else:
                    depth = _image(view.depth.astype(np.float32), "32FC1", t - 0.003, frame)
                write(f"/{name}/depth", "sensor_msgs/msg/Image", depth, t + 0.005)
    return rig


def camera_topics(rig: SyntheticRig) -> list[CameraTopics]:
    """The image, camera_info and depth topics of every camera in the bag."""
    return [CameraTopics(f"/{n}/image_rect", f"/{n}/camera_info", f"/{n}/depth")
            for n in rig.names]
