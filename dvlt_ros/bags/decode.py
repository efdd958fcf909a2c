"""Camera messages read from a bag -> pipeline :class:`CameraFrame` s, with the node's own
conversion (:func:`dvlt_ros.node_support.inputs.frame_from_image`): the latest CameraInfo
of a camera goes with its next image, conversion failures become ``image_rejected``
events (unset stamps ``stamp_rejected``), images are decoded within ``max_pixels``, an
empty ``frame_id`` becomes ``<camera>_optical_frame``.

Messages are deserialised with ``rclpy.serialization`` into the very classes a live
subscription receives.
"""

from __future__ import annotations

from dataclasses import dataclass

from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from dvlt_ros.bags.msgtypes import COMPRESSED_IMAGE, IMAGE
from dvlt_ros.node_support.inputs import camera_info_data, frame_from_image
from dvlt_ros.node_support.parameters import camera_label
from dvlt_ros.pipeline import CameraFrame, CameraInfoData, PipelineEvent


@dataclass(frozen=True)
class CameraTopics:
    """The topics of one camera: ``image`` (raw or compressed), its ``info`` and, for an
    RGB-D camera (:mod:`dvlt_ros.bags.to_dataset`), the ``depth`` registered to the image.
    ``camera``: its label (default: the image topic); ``compressed``: the image topic is
    ``CompressedImage``."""

    image: str
    info: str
    depth: str | None = None
    camera: str = ""
    compressed: bool = False

    def __post_init__(self) -> None:
        if not self.camera:
            object.__setattr__(self, "camera", self.image)


def camera_topics(namespace: str, transport: str) -> CameraTopics:
    """Topics the node subscribes to for camera ``namespace`` (node in the root namespace)."""
    base = "/" + namespace.strip("/")
    compressed = transport == "compressed"
    image = f"{base}/image_raw/compressed" if compressed else f"{base}/image_raw"
    return CameraTopics(image, f"{base}/camera_info", camera=camera_label(namespace),
                        compressed=compressed)


class FrameDecoder:
    """Turns serialised image and CameraInfo messages into frames (one per image), each
    within ``max_pixels`` (see :func:`~dvlt_ros.node_support.inputs.frame_from_image`),
    and keeps each camera's colour view for its depth images, as the node's
    :meth:`~dvlt_ros.node_support.inputs.CameraInputs.colour_view`."""

    def __init__(self, use_camera_info: bool, max_pixels: int | None = None) -> None:
        self.use_camera_info = use_camera_info
        self.max_pixels = max_pixels
        self._infos: dict[str, CameraInfoData] = {}
        self._colour: dict[str, tuple[str, tuple[int, int]]] = {}

    def camera_info(self, camera: str, raw: bytes) -> None:
        """Remember the latest CameraInfo of ``camera``."""
        self._infos[camera] = camera_info_data(deserialize_message(raw, CameraInfo))

    def image(self, camera: str, raw: bytes, compressed: bool
              ) -> tuple[CameraFrame | None, list[PipelineEvent]]:
        """The frame of one image message (None when it is rejected) and the events to
        report (why it was rejected, or that it was downscaled)."""
        msg = deserialize_message(raw, CompressedImage if compressed else Image)
        info = self._infos.get(camera) if self.use_camera_info else None
        frame, events, size = frame_from_image(msg, camera, compressed, info, self.max_pixels)
        if frame is not None:
            self._colour[camera] = (frame.frame_id, size)
        return frame, events

    def colour_view(self, camera: str) -> tuple[str, tuple[int, int]] | None:
        """The optical frame and size (width, height, as published) of ``camera``'s latest
        accepted image, or None before the first."""
        return self._colour.get(camera)


def detect_cameras(topics: dict, transport: str) -> list[str]:
    """Camera namespaces of a bag: every ``<ns>/image_raw`` (or ``.../compressed``) topic
    of the matching image type, sorted by name."""
    suffix, kind = (("/image_raw/compressed", COMPRESSED_IMAGE) if transport == "compressed"
                    else ("/image_raw", IMAGE))
    return sorted(name[: -len(suffix)].lstrip("/") for name, info in topics.items()
                  if name.endswith(suffix) and info.msgtype == kind and name != suffix)
