"""Input frames of the pipeline and the checks every frame passes before it is queued.

A :class:`CameraFrame` is one image of one camera with its stamp (integer nanoseconds),
its ``frame_id`` and, optionally, the intrinsics of its CameraInfo. :func:`prepare_frame`
validates a frame once, at arrival: CameraInfo with NaN, zero or mismatched values is
dropped (the model's predicted intrinsics are used instead), images larger than
``max_pixels`` are downscaled (CameraInfo scaled to match), unusable images are rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from dvlt_core.io.images import resize_antialiased
from dvlt_ros.pipeline.events import Level, PipelineEvent

#: The network turns the longer side into 504 px and needs a 14 px patch on the shorter one.
DEFAULT_MAX_ASPECT = 504 / 14


@dataclass(frozen=True)
class CameraInfoData:
    """The parts of a sensor_msgs/CameraInfo the pipeline uses.

    ``k`` is the 3x3 intrinsic matrix in the OpenCV/ROS convention (pixel centre of column
    u, row v at (u, v)); ``width``/``height`` the image size it belongs to.
    """

    k: np.ndarray
    width: int
    height: int
    distortion_model: str = ""
    d: tuple[float, ...] = ()

    def scaled(self, new_width: int, new_height: int) -> CameraInfoData:
        """The same camera for the image resized to ``new_width`` x ``new_height``."""
        sx, sy = new_width / self.width, new_height / self.height
        k = np.array(self.k, dtype=np.float64)
        k[0, 0] *= sx
        k[0, 1] *= sx
        k[1, 1] *= sy
        k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
        k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
        return replace(self, k=k, width=new_width, height=new_height)


@dataclass(frozen=True)
class CameraFrame:
    """One image of one camera: ``rgb`` uint8 (H, W, 3), ``stamp_ns`` integer nanoseconds."""

    camera: str
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray = field(repr=False)
    info: CameraInfoData | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the view across windows: (camera, stamp)."""
        return (self.camera, self.stamp_ns)


def check_camera_info(
    info: CameraInfoData | None, height: int, width: int, camera: str = ""
) -> tuple[CameraInfoData | None, list[PipelineEvent]]:
    """Return ``info`` if it is usable for an image of ``height`` x ``width``, else None.

    Unusable: non-finite entries, fx or fy <= 0, or a size other than the image's. The
    event says that the predicted intrinsics are used instead.
    """
    if info is None:
        return None, []
    k = np.asarray(info.k, dtype=np.float64)
    problem = None
    if k.shape != (3, 3):
        problem = f"K has shape {k.shape}, expected 3x3"
    elif not np.isfinite(k).all():
        problem = "K contains NaN or inf"
    elif k[0, 0] <= 0 or k[1, 1] <= 0:
        problem = f"focal lengths fx={k[0, 0]:g}, fy={k[1, 1]:g} are not positive"
    elif (info.width, info.height) != (width, height):
        problem = f"CameraInfo is for {info.width}x{info.height} but the image is {width}x{height}"
    if problem is None:
        events = []
        if any(abs(float(c)) > 0 for c in info.d):
            events.append(
                PipelineEvent(
                    "camera_info_distortion",
                    Level.WARN,
                    f"distortion ({info.distortion_model}) is ignored: the model predicts a "
                    "pinhole camera; publish rectified images for exact depth",
                    camera or None,
                )
            )
        return replace(info, k=k), events
    return None, [
        PipelineEvent(
            "camera_info_invalid",
            Level.WARN,
            f"{problem}; using the predicted intrinsics instead (fix the camera driver's "
            "calibration or set use_input_camera_info:=false)",
            camera or None,
        )
    ]


def prepare_frame(
    frame: CameraFrame,
    max_pixels: int | None = None,
    max_aspect: float = DEFAULT_MAX_ASPECT,
) -> tuple[CameraFrame | None, list[PipelineEvent]]:
    """Validate and, if needed, downscale one frame; None when it must be dropped.

    Images with more than ``max_pixels`` pixels are resized (bilinear, antialiased, aspect
    kept) to at most ``max_pixels``; their CameraInfo is scaled to the new size, so depth
    and camera_info published for the frame refer to the downscaled image.
    """
    rgb = np.asarray(frame.rgb)
    stamp = frame.stamp_ns
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        return None, [
            PipelineEvent(
                "image_rejected",
                Level.ERROR,
                f"expected uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}; convert the "
                "image to rgb8/bgr8 before it reaches the pipeline",
                frame.camera,
                stamp,
            )
        ]
    height, width = rgb.shape[:2]
    if height < 1 or width < 1:
        return None, [
            PipelineEvent(
                "image_rejected", Level.ERROR, f"empty image {width}x{height}", frame.camera, stamp
            )
        ]
    if max(height, width) / min(height, width) > max_aspect:
        return None, [
            PipelineEvent(
                "image_rejected",
                Level.ERROR,
                f"{width}x{height} is more elongated than 1:{max_aspect:.0f}; crop it",
                frame.camera,
                stamp,
            )
        ]
    info, events = check_camera_info(frame.info, height, width, frame.camera)
    if max_pixels is not None and height * width > max_pixels:
        factor = math.sqrt(max_pixels / (height * width))
        new_h, new_w = max(1, math.floor(height * factor)), max(1, math.floor(width * factor))
        rgb = _resize_uint8(rgb, new_h, new_w)
        if info is not None:
            info = info.scaled(new_w, new_h)
        events.append(
            PipelineEvent(
                "image_downscaled",
                Level.WARN,
                f"{width}x{height} exceeds max_pixels={max_pixels}: downscaled to "
                f"{new_w}x{new_h} (raise max_pixels or resize upstream to avoid this cost)",
                frame.camera,
                stamp,
            )
        )
    return replace(frame, rgb=rgb, info=info), events


def _resize_uint8(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    out = resize_antialiased(tensor, (height, width))
    return out.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
