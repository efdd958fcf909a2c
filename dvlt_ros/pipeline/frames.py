"""Input frames of the pipeline and the checks every frame passes before it is queued.

A :class:`CameraFrame` is one image of one camera with its stamp (integer nanoseconds),
its ``frame_id`` and, optionally, the intrinsics of its CameraInfo. :func:`prepare_frame`
validates a frame once, at arrival: CameraInfo with NaN, zero or mismatched values is
dropped (the model's predicted intrinsics are used instead), distorted images
(``plumb_bob``, ``rational_polynomial``, ``equidistant``) are rectified to the pinhole
camera of their K (:class:`dvlt_core.io.rectify.Rectifier`, maps computed once per
CameraInfo), images larger than ``max_pixels`` are downscaled (CameraInfo scaled to match),
images the network cannot take at ``img_size`` (:func:`dvlt_core.io.images.image_size_problem`:
too elongated, or smaller than one patch per side) are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from dvlt_core.io.image_decode import downscale_rgb
from dvlt_core.io.images import image_size_problem
from dvlt_core.io.rectify import CameraCalibration, Rectifier
from dvlt_ros.pipeline.events import Level, PipelineEvent

#: Network input size used for the arrival checks until the model's own is known (that of
#: the released nvidia/dvlt weights).
DEFAULT_IMG_SIZE = 504
#: Undistortion maps of :func:`prepare_frame` callers that bring no rectifier of their own.
_SHARED_RECTIFIER = Rectifier("k", cache_size=16)


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

    @property
    def distorted(self) -> bool:
        """Whether ``d`` has a non-zero coefficient (the image needs rectifying)."""
        return any(abs(float(c)) > 0 for c in self.d)

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
        return replace(info, k=k), []
    return None, [
        PipelineEvent(
            "camera_info_invalid",
            Level.WARN,
            f"{problem}; using the predicted intrinsics instead (fix the camera driver's "
            "calibration or set use_input_camera_info:=false)",
            camera or None,
        )
    ]


def rectify_frame(
    rgb: np.ndarray, info: CameraInfoData, rectifier: Rectifier, camera: str = "",
    stamp_ns: int | None = None,
) -> tuple[np.ndarray, CameraInfoData | None, list[PipelineEvent]]:
    """Undistort ``rgb`` to the pinhole camera of ``info.k`` in the same optical frame
    (stereo ``R`` and ``P`` are not applied, so TF and poses stay those of the image's
    frame_id); returns the image, its pinhole CameraInfo and what to report. Distortion that
    cannot be rectified (unknown model, wrong number of coefficients, no OpenCV) drops the
    CameraInfo (``camera_info_distortion``): the predicted intrinsics are used."""
    height, width = rgb.shape[:2]
    try:
        calibration = CameraCalibration(width, height, info.k, info.distortion_model, info.d)
        rectified = rectifier.rectify(rgb, calibration)
    except (ValueError, ImportError) as exc:
        return rgb, None, [PipelineEvent(
            "camera_info_distortion", Level.WARN,
            f"{exc}; the image is not rectified and its CameraInfo is not used (predicted "
            "intrinsics instead): publish rectified images or fix the calibration",
            camera or None, stamp_ns,
        )]
    return rectified.image, CameraInfoData(rectified.k, width, height), []


def downscaled_event(camera: str, stamp_ns: int, source: tuple[int, int],
                     result: tuple[int, int], max_pixels: int | None) -> PipelineEvent:
    """The ``image_downscaled`` WARN of an image of ``source`` (width, height) made
    ``result``."""
    return PipelineEvent(
        "image_downscaled",
        Level.WARN,
        f"{source[0]}x{source[1]} exceeds max_pixels={max_pixels}: downscaled to "
        f"{result[0]}x{result[1]} (raise max_pixels or resize upstream to avoid this cost)",
        camera,
        stamp_ns,
    )


def prepare_frame(
    frame: CameraFrame,
    max_pixels: int | None = None,
    img_size: int = DEFAULT_IMG_SIZE,
    rectifier: Rectifier | None = None,
) -> tuple[CameraFrame | None, list[PipelineEvent]]:
    """Validate and, if needed, rectify and downscale one frame; None when it must be
    dropped.

    A frame whose CameraInfo has distortion is rectified (:func:`rectify_frame`, with
    ``rectifier``'s cached maps; a shared one when None); its CameraInfo becomes the
    pinhole K, which depth, camera_info and the known-K pose fit then use. Images with more
    than ``max_pixels`` pixels are resized (bilinear, antialiased, aspect kept:
    :func:`dvlt_core.io.image_decode.downscale_rgb`) to at most ``max_pixels``; their
    CameraInfo is scaled to the new size, so depth and camera_info published for the frame
    refer to the downscaled image. Images the network cannot take at ``img_size`` are
    rejected.
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
    info, events = check_camera_info(frame.info, height, width, frame.camera)
    if info is not None and info.distorted:
        maps = _SHARED_RECTIFIER if rectifier is None else rectifier
        rgb, info, problems = rectify_frame(rgb, info, maps, frame.camera, stamp)
        events += problems
    small = downscale_rgb(rgb, max_pixels)
    if small is not rgb:
        new_h, new_w = small.shape[:2]
        rgb = small
        if info is not None:
            info = info.scaled(new_w, new_h)
        events.append(downscaled_event(frame.camera, stamp, (width, height), (new_w, new_h),
                                       max_pixels))
    problem = image_size_problem(*rgb.shape[:2], img_size)
    if problem is not None:
        return None, [
            PipelineEvent("image_rejected", Level.ERROR, f"{problem}; frame dropped",
                          frame.camera, stamp)
        ]
    return replace(frame, rgb=rgb, info=info), events
