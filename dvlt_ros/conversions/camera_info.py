"""sensor_msgs/CameraInfo <-> pinhole intrinsics.

Intrinsics are 3x3 matrices in the OpenCV/ROS convention: the centre of pixel (column u,
row v) is at (u, v). Whether a received CameraInfo is usable is decided by the pipeline
(``dvlt_ros.pipeline.frames.check_camera_info``), not here.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo


def camera_info_from_intrinsics(
    K: np.ndarray, width: int, height: int, header=None
) -> CameraInfo:
    """CameraInfo of an undistorted pinhole camera with intrinsics ``K`` for a
    ``width`` x ``height`` image: ``k`` = K, ``p`` = [K | 0], ``r`` = identity, no
    distortion (the model predicts an undistorted pinhole camera per view)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f"intrinsics must be a finite 3x3 matrix, got {K.tolist()}")
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = [float(v) for v in P.reshape(-1)]
    return msg


def intrinsics_from_camera_info(msg: CameraInfo) -> np.ndarray:
    """The 3x3 K of ``msg`` as float64, unchecked (a camera without calibration sends
    zeros)."""
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
