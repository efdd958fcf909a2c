"""Pure-numpy pieces of turning a recorded RGB-D camera into dataset frames: depth pixels in
their ROS encoding to metres, and a ``CameraInfo``'s intrinsics in the dataset's convention.

ROS-free: the bag converter (:mod:`dvlt_ros.bags.to_dataset`) reads the messages and hands
their fields here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Depth encodings (REP 118) and the metres of one unit.
DEPTH_ENCODINGS = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}


def depth_metres(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """float32 metres (H, W) from depth ``pixels`` in ``encoding`` (``16UC1``/``mono16``
    millimetres or ``32FC1`` metres); non-finite and negative readings become 0 (invalid)."""
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unsupported depth encoding {encoding!r}; use 16UC1 (mm) or "
                         "32FC1 (m)")
    depth = np.asarray(pixels).astype(np.float32) * DEPTH_ENCODINGS[encoding]
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def dataset_intrinsics(info: Any, allow_distortion: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """Dataset-convention intrinsics (cx, cy + 0.5) and (H, W) from a ``CameraInfo`` (any
    object with its ``k``, ``d``, ``height`` and ``width``). Distortion is refused unless
    ``allow_distortion``: the dataset holds pinhole images."""
    if not allow_distortion and np.any(np.abs(np.asarray(info.d, dtype=np.float64)) > 1e-9):
        raise ValueError(
            "camera_info has non-zero distortion: record the rectified image topic "
            "(image_rect) or pass --allow-distortion to keep the images as they are"
        )
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
    k[0, 2] += 0.5
    k[1, 2] += 0.5
    return k, (int(info.height), int(info.width))
