"""A depth camera's sensor_msgs/Image (+ its CameraInfo) -> the pipeline's MeasuredDepth.

REP 118 depth only: ``16UC1`` millimetres or ``32FC1`` metres; zero, NaN and inf pixels are
invalid pixels (no return), not errors. Which depth needs reprojection into the colour camera:

* its ``frame_id`` is the colour image's (or empty) and it has the colour image's size, or
  no CameraInfo of its own came: *registered* (``MeasuredDepth.k`` None; the session
  resamples it to the view when only the size differs);
* the same frame at another size, with its CameraInfo: reprojected with that ``k``;
* another frame: reprojected with its CameraInfo's ``k`` and the depth optical frame's pose
  in the colour optical frame, looked up in TF (``<image frame_id> -> <depth frame_id>``) at
  the depth image's stamp.

Everything else is refused with :class:`DepthConversionError` saying why and what to fix.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from dvlt_core.geometry import TransformError
from dvlt_core.io.image_decode import ImageDecodeError, check_decode_size
from dvlt_ros.conversions.camera_info import intrinsics_from_camera_info
from dvlt_ros.conversions.image import ImageConversionError, image_to_array
from dvlt_ros.conversions.tf import ns_from_stamp
from dvlt_ros.pipeline.scale import MeasuredDepth

#: Depth encodings of REP 118: millimetres in uint16, metres in float32.
DEPTH_ENCODINGS = ("16UC1", "32FC1")


class DepthConversionError(ValueError):
    """A depth image that cannot be used; the message says why and what to fix."""


class Transforms(Protocol):
    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray: ...


def depth_info_topic(depth_topic: str) -> str:
    """The CameraInfo beside a depth image topic: ``depth/image_raw`` -> ``depth/camera_info``."""
    return "/".join([*depth_topic.strip("/").split("/")[:-1], "camera_info"])


def check_depth_image(msg: Image, max_pixels: int | None) -> None:
    """Refuse a depth image before it is converted: an unset or negative stamp, or more
    pixels than the decode budget of ``max_pixels`` allows."""
    stamp = ns_from_stamp(msg.header.stamp)
    if stamp <= 0:
        raise DepthConversionError(
            f"header stamp is {stamp * 1e-9:.3f} s (unset or negative); the depth driver "
            "must stamp each image with its capture time")
    try:
        check_decode_size(int(msg.width), int(msg.height), max_pixels,
                          f"{msg.encoding} depth image")
    except ImageDecodeError as exc:
        raise DepthConversionError(str(exc)) from None


def depth_pixels(msg: Image) -> np.ndarray:
    """The pixels of a 16UC1 or 32FC1 image (uint16 mm or float32 m, as sent)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise DepthConversionError(
            f"depth encoding {msg.encoding!r} is not 16UC1 (millimetres) or 32FC1 (metres) "
            "(REP 118); publish one of those on the depth topic"
        )
    try:
        return image_to_array(msg)
    except ImageConversionError as exc:
        raise DepthConversionError(f"depth image: {exc}") from None


def depth_intrinsics(info: CameraInfo, width: int, height: int) -> np.ndarray:
    """The K of a depth image's CameraInfo, checked against the image (finite, positive
    focal lengths, the same size)."""
    k = intrinsics_from_camera_info(info)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DepthConversionError(
            f"depth CameraInfo K {k.reshape(-1).tolist()} has non-finite or non-positive "
            "focal lengths; calibrate the depth camera")
    if (int(info.width), int(info.height)) != (width, height):
        raise DepthConversionError(
            f"depth CameraInfo is for {info.width}x{info.height} but the depth image is "
            f"{width}x{height}; publish the CameraInfo of that depth image")
    return k


def measured_depth(
    msg: Image,
    info: CameraInfo | None,
    colour_frame: str,
    colour_size: tuple[int, int] | None = None,
    transforms: Transforms | None = None,
) -> MeasuredDepth:
    """The depth of ``msg`` for the colour camera whose optical frame is ``colour_frame`` and
    whose images are ``colour_size`` (width, height; None: not known yet). ``info``: the
    depth image's own CameraInfo (None: none received); ``transforms``: TF, needed when the
    depth has its own frame. See the module docstring for the rules."""
    pixels = depth_pixels(msg)
    height, width = pixels.shape[:2]
    depth_frame = msg.header.frame_id.lstrip("/")
    colour_frame = colour_frame.lstrip("/")
    if not depth_frame or depth_frame == colour_frame:
        if info is None or colour_size in (None, (width, height)):
            return MeasuredDepth.from_image(pixels)
        return MeasuredDepth.from_image(pixels, depth_intrinsics(info, width, height))
    if info is None:
        raise DepthConversionError(
            f"depth in frame {depth_frame!r} (not the colour image's {colour_frame!r}) needs "
            "its CameraInfo on the sibling depth camera_info topic to be reprojected; none "
            "received yet")
    k = depth_intrinsics(info, width, height)
    if transforms is None:
        raise DepthConversionError(
            f"depth in frame {depth_frame!r} (not the colour image's {colour_frame!r}) needs "
            "TF to be reprojected; publish it registered to the colour camera")
    try:
        colour_from_depth = transforms.lookup(colour_frame, depth_frame,
                                              ns_from_stamp(msg.header.stamp))
    except TransformError as exc:
        raise DepthConversionError(
            f"depth in frame {depth_frame!r} cannot be reprojected into {colour_frame!r}: "
            f"{exc}; publish that transform on /tf_static") from None
    return MeasuredDepth.from_image(pixels, k, colour_from_depth)
