"""Camera subscriptions: sensor_msgs images (and CameraInfo) -> pipeline CameraFrames.

Each configured camera namespace ``<ns>`` gets ``<ns>/image_raw`` (``Image``) or
``<ns>/image_raw/compressed`` (``CompressedImage``), and ``<ns>/camera_info`` when the
input intrinsics are used. Names are relative, so they follow the node's namespace and
ordinary ``--ros-args -r`` remapping. Conversion failures become ``image_rejected``
events, unset or negative header stamps ``stamp_rejected`` events; nothing here raises
into the executor. :class:`DepthInputs` subscribes each camera's depth image
(``<ns>/<depth_topic>``, 16UC1 mm or 32FC1 m) and its sibling ``camera_info`` when the
depth scale is used; refused depth images become ``depth_rejected`` events and are counted.

Memory stays bounded by ``max_pixels``: a raw image larger than the decode budget
(:func:`dvlt_core.io.image_decode.check_decode_size`) is refused before it is converted, a
compressed one is reduced while it is decoded or refused; what is accepted is downscaled
to ``max_pixels`` here (its CameraInfo scaled to match).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dvlt_core.io.image_decode import ImageDecodeError, check_decode_size, downscale_rgb
from dvlt_ros.conversions.camera_info import intrinsics_from_camera_info
from dvlt_ros.conversions.image import ImageConversionError, decode_compressed, image_to_rgb8
from dvlt_ros.conversions.tf import ns_from_stamp
from dvlt_ros.node_support.depth import (
    DepthConversionError,
    Transforms,
    check_depth_image,
    depth_info_topic,
    measured_depth,
)
from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.frames import CameraFrame, CameraInfoData, downscaled_event
from dvlt_ros.pipeline.scale import MeasuredDepth
from dvlt_ros.pipeline.settings import camera_label

FrameSink = Callable[[CameraFrame], None]
DepthSink = Callable[[str, int, MeasuredDepth], None]
EventSink = Callable[[PipelineEvent], None]


def optical_frame_id(frame_id: str, label: str) -> str:
    """The image's frame, without a leading slash (tf2 refuses those); when the driver
    leaves it empty, ``<camera>_optical_frame``."""
    frame_id = frame_id.lstrip("/")
    return frame_id or f"{label.replace('/', '_')}_optical_frame"


def camera_info_data(msg: CameraInfo) -> CameraInfoData:
    """The parts of a CameraInfo message the pipeline uses (checked later, per frame)."""
    return CameraInfoData(
        k=intrinsics_from_camera_info(msg),
        width=int(msg.width),
        height=int(msg.height),
        distortion_model=msg.distortion_model,
        d=tuple(float(v) for v in msg.d),
    )


class ConvertedImage(NamedTuple):
    """:func:`frame_from_image`'s answer: the ``frame`` (None when refused), the ``events``
    to report and ``received_size`` (width, height) of the image as published, before any
    ``max_pixels`` reduction (None when refused): the size a registered depth image has."""

    frame: CameraFrame | None
    events: list[PipelineEvent]
    received_size: tuple[int, int] | None = None


def frame_from_image(
    msg, camera: str, compressed: bool, info: CameraInfoData | None,
    max_pixels: int | None = None,
) -> ConvertedImage:
    """The pipeline frame of an Image/CompressedImage message within ``max_pixels``
    (None when it is refused), and what to report: ``image_rejected`` / ``stamp_rejected``
    saying why there is no frame, ``image_downscaled``. Shared by the subscriptions and
    offline bag processing (``dvlt_ros.bags``), so both turn messages into identical
    frames (and colour views for their depth images)."""
    stamp = ns_from_stamp(msg.header.stamp)
    if stamp <= 0:
        what = "0 (unset)" if stamp == 0 else f"negative ({stamp * 1e-9:.3f} s)"
        return ConvertedImage(None, [PipelineEvent(
            "stamp_rejected", Level.WARN,
            f"header stamp is {what}: frame dropped (the camera driver must stamp each image "
            "with its capture time)", camera, stamp)])
    try:
        if compressed:
            decoded = decode_compressed(msg, max_pixels)
            rgb, source = decoded.rgb, decoded.source_size
        else:
            check_decode_size(int(msg.width), int(msg.height), max_pixels,
                              f"{msg.encoding} image")
            source = (int(msg.width), int(msg.height))
            rgb = downscale_rgb(image_to_rgb8(msg), max_pixels)
    except (ImageConversionError, ImageDecodeError) as exc:
        return ConvertedImage(None, [PipelineEvent(
            "image_rejected", Level.ERROR, f"{exc}; frame dropped", camera, stamp)])
    events = []
    size = (rgb.shape[1], rgb.shape[0])
    if size != source:
        events.append(downscaled_event(camera, stamp, source, size, max_pixels))
        if info is not None and (info.width, info.height) == source:
            info = info.scaled(*size)
    return ConvertedImage(CameraFrame(
        camera=camera,
        stamp_ns=stamp,
        frame_id=optical_frame_id(msg.header.frame_id, camera),
        rgb=rgb,
        info=info,
    ), events, source)


class CameraInputs:
    """Subscribes to every camera and hands valid frames to ``on_frame``;
    ``on_rejected(camera)`` runs for every image message that gives no frame (after its
    event went to ``on_event``); ``after_image`` runs after every image message, whatever
    became of it."""

    def __init__(
        self,
        node,
        cameras: Sequence[str],
        *,
        transport: str,
        use_camera_info: bool,
        qos,
        on_frame: FrameSink,
        on_event: EventSink,
        on_rejected: Callable[[str], None] | None = None,
        max_pixels: int | None = None,
        after_image: Callable[[], None] | None = None,
        callback_group=None,
    ) -> None:
        self._on_frame = on_frame
        self._after_image = after_image
        self._on_event = on_event
        self._on_rejected = on_rejected or (lambda camera: None)
        self._max_pixels = max_pixels
        self._logger = node.get_logger()
        self._lock = threading.Lock()
        self._infos: dict[str, CameraInfoData] = {}
        self._empty_frame_reported: set[str] = set()
        self._colour: dict[str, tuple[str, tuple[int, int]]] = {}
        self.subscriptions = []
        for namespace in cameras:
            label = camera_label(namespace)
            base = namespace.rstrip("/")
            if transport == "compressed":
                self.subscriptions.append(node.create_subscription(
                    CompressedImage, f"{base}/image_raw/compressed",
                    lambda msg, c=label: self._on_image(msg, c, compressed=True),
                    qos, callback_group=callback_group,
                ))
            else:
                self.subscriptions.append(node.create_subscription(
                    Image, f"{base}/image_raw",
                    lambda msg, c=label: self._on_image(msg, c, compressed=False),
                    qos, callback_group=callback_group,
                ))
            if use_camera_info:
                self.subscriptions.append(node.create_subscription(
                    CameraInfo, f"{base}/camera_info",
                    lambda msg, c=label: self._on_camera_info(msg, c),
                    qos, callback_group=callback_group,
                ))
        self._use_camera_info = use_camera_info

    def _on_camera_info(self, msg: CameraInfo, camera: str) -> None:
        info = camera_info_data(msg)
        with self._lock:
            self._infos[camera] = info

    def _on_image(self, msg, camera: str, compressed: bool) -> None:
        try:
            self._handle_image(msg, camera, compressed)
        except Exception as exc:  # an exception here would end the executor's spin
            self._on_event(PipelineEvent(
                "image_rejected", Level.ERROR,
                f"cannot use the image: {type(exc).__name__}: {exc}; frame dropped", camera,
                ns_from_stamp(msg.header.stamp),
            ))
            self._on_rejected(camera)
        finally:
            if self._after_image is not None:
                self._after_image()

    def _handle_image(self, msg, camera: str, compressed: bool) -> None:
        with self._lock:
            info = self._infos.get(camera) if self._use_camera_info else None
        frame, events, size = frame_from_image(msg, camera, compressed, info, self._max_pixels)
        for event in events:
            self._on_event(event)
        if frame is None:
            self._on_rejected(camera)
            return
        with self._lock:
            self._colour[camera] = (frame.frame_id, size)
        if not msg.header.frame_id and camera not in self._empty_frame_reported:
            self._empty_frame_reported.add(camera)
            self._logger.warning(
                f"[{camera}] image header.frame_id is empty; using "
                f"'{optical_frame_id('', camera)}' (set the driver's frame_id to the camera's "
                "optical frame)"
            )
        self._on_frame(frame)

    def colour_view(self, camera: str) -> tuple[str, tuple[int, int]] | None:
        """The optical frame and size (width, height, as published: ``received_size``) of
        ``camera``'s latest accepted image, or None before the first."""
        with self._lock:
            return self._colour.get(camera)


#: Depth images of a camera kept until its first colour image arrives.
EARLY_DEPTH_QUEUE = 4


class DepthInputs:
    """Subscribes to each camera's depth image and its CameraInfo and hands the converted
    depth to ``on_depth(camera, stamp_ns, depth)``. ``colour_view(camera)`` gives the
    camera's colour optical frame and image size (:meth:`CameraInputs.colour_view`);
    ``transforms`` (TF) reprojects depth published in its own frame. Refused images go to
    ``on_event`` as ``depth_rejected`` WARN events and are counted (:attr:`rejected`). Depth
    arriving before its camera's first colour image waits for it (at most
    ``EARLY_DEPTH_QUEUE`` per camera; :meth:`flush` after each accepted colour frame),
    older ones are dropped and counted (:attr:`early`). Nothing here raises into the
    executor."""

    def __init__(
        self,
        node,
        cameras: Sequence[str],
        *,
        depth_topic: str,
        qos,
        colour_view: Callable[[str], tuple[str, tuple[int, int]] | None],
        on_depth: DepthSink,
        on_event: EventSink,
        transforms: Transforms | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self._colour_view = colour_view
        self._on_depth = on_depth
        self._on_event = on_event
        self._transforms = transforms
        self._max_pixels = max_pixels
        self._lock = threading.Lock()
        self._infos: dict[str, CameraInfo] = {}
        self._waiting: dict[str, deque[Image]] = {}
        self.received = 0
        self.rejected = 0
        self.early = 0
        self.subscriptions = []
        relative = depth_topic.strip("/")
        for namespace in cameras:
            label = camera_label(namespace)
            base = namespace.rstrip("/")
            self.subscriptions.append(node.create_subscription(
                Image, f"{base}/{relative}", lambda msg, c=label: self._on_image(msg, c), qos))
            self.subscriptions.append(node.create_subscription(
                CameraInfo, f"{base}/{depth_info_topic(relative)}",
                lambda msg, c=label: self._on_info(msg, c), qos))

    def _on_info(self, msg: CameraInfo, camera: str) -> None:
        with self._lock:
            self._infos[camera] = msg

    def _on_image(self, msg: Image, camera: str) -> None:
        with self._lock:
            self.received += 1
        self._use(msg, camera)

    def flush(self, camera: str) -> None:
        """Use the depth images of ``camera`` that waited for its first colour image."""
        with self._lock:
            waiting = self._waiting.pop(camera, ())
        for msg in waiting:
            self._use(msg, camera)

    def _use(self, msg: Image, camera: str) -> None:
        stamp = ns_from_stamp(msg.header.stamp)
        try:
            self._handle(msg, camera, stamp)
        except DepthConversionError as exc:
            self._reject(camera, stamp, str(exc))
        except Exception as exc:  # an exception here would end the executor's spin
            self._reject(camera, stamp, f"{type(exc).__name__}: {exc}")

    def _handle(self, msg: Image, camera: str, stamp: int) -> None:
        check_depth_image(msg, self._max_pixels)
        colour = self._colour_view(camera)
        with self._lock:
            info = self._infos.get(camera)
            if colour is None:
                waiting = self._waiting.setdefault(camera, deque(maxlen=EARLY_DEPTH_QUEUE))
                self.early += len(waiting) == waiting.maxlen
                waiting.append(msg)
                return
        self._on_depth(camera, stamp, measured_depth(msg, info, *colour, self._transforms))

    def _reject(self, camera: str, stamp: int, reason: str) -> None:
        with self._lock:
            self.rejected += 1
        self._on_event(PipelineEvent(
            "depth_rejected", Level.WARN,
            f"depth image dropped: {reason}; this camera gives no depth scale until one is "
            "usable", camera, stamp))

    def values(self) -> dict[str, int]:
        """Counters for diagnostics."""
        with self._lock:
            return {"depth_received": self.received, "depth_rejected": self.rejected,
                    "depth_dropped_before_first_image": self.early}
