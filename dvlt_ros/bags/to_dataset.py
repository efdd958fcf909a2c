"""Turn a recorded rosbag2 (sqlite3 or mcap) into a training scene (``dvlt-bag-to-dataset``,
and the ``rosbag`` training source).

For each camera: an image topic (``sensor_msgs/Image`` or ``CompressedImage``), its
``camera_info`` and a depth topic registered to that image (``16UC1``/``mono16`` millimetres or
``32FC1`` metres). Poses come from TF (``/tf`` + ``/tf_static``: the image frame in
``fixed_frame``) or from a ``nav_msgs/Odometry`` topic composed with the static base→camera
transform (from ``/tf_static``, or given). Every image is paired with the depth message nearest
in header time (within ``tolerance``) and posed at its own header time; frames without a depth
partner or a pose are skipped and counted. The result is one scene folder in the dataset format
(:mod:`dvlt_core.training.data.folder`), frames sorted by time, then camera.

The bag is read by :class:`~dvlt_ros.bags.source.BagSource` (known message types only, MCAP
CRCs checked, whatever is readable of a damaged bag kept, with warnings), messages are
deserialised into the rclpy classes and images converted as the node converts them
(:mod:`dvlt_ros.conversions.image`). The steps: read stamps and poses, plan the frames (pair,
subsample, pose), decode the planned images and depth, write the scene.

The image ``frame_id`` must be the camera's optical frame (x right, y down, z forward, REP 103
``*_optical_frame``); images must be rectified (``image_rect``): distortion is refused.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message
from tqdm import tqdm

from dvlt_core.geometry import (
    ExtrapolationError,
    TfTree,
    TransformError,
    rigid_from_translation_quaternion,
)
from dvlt_core.io.image_decode import decode_image
from dvlt_core.training.data.folder import SceneWriter
from dvlt_core.training.data.rgbd import dataset_intrinsics, depth_metres
from dvlt_ros.bags.decode import CameraTopics
from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.msgtypes import CAMERA_INFO, IMAGE, IMAGE_TYPES, TF_MESSAGE
from dvlt_ros.bags.source import BagMessage, BagSource
from dvlt_ros.bags.staged_output import StagedOutput
from dvlt_ros.conversions.image import image_to_array, image_to_rgb8

logger = logging.getLogger(__name__)
ODOMETRY = "nav_msgs/msg/Odometry"
TF_TOPICS = ("/tf", "/tf_static")


def parse_camera(spec: str) -> CameraTopics:
    """``CameraTopics`` from the ``IMAGE,INFO,DEPTH`` form of ``--camera``."""
    parts = [part.strip() for part in str(spec).split(",")]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"camera {spec!r}: give three comma-separated topics IMAGE,INFO,DEPTH "
                         "(image, camera_info and registered depth)")
    return CameraTopics(*parts)


def extrinsic_matrix(values: Sequence[float]) -> np.ndarray:
    """The 4x4 base→optical-frame transform from ``x, y, z, qx, qy, qz, qw``."""
    v = [float(x) for x in values]
    if len(v) != 7:
        raise ValueError(f"extrinsic {list(values)}: give seven numbers x,y,z,qx,qy,qz,qw")
    return rigid_from_translation_quaternion(v[:3], v[3:7])


@dataclass
class BagConversion:
    """What to read from the bag and how to pose it."""

    cameras: list[CameraTopics]
    pose_source: str = "tf"  # "tf" or "odometry"
    fixed_frame: str = "map"
    odometry_topic: str | None = None
    base_from_camera: dict[str, np.ndarray] = field(default_factory=dict)  # per optical frame
    tolerance: float = 0.02  # seconds, image ↔ depth and nearest-pose matching
    max_gap: float = 0.5  # seconds between pose samples that may be interpolated
    min_interval: float = 0.0  # seconds between kept frames of one camera
    max_depth: float | None = None
    allow_distortion: bool = False

    def __post_init__(self) -> None:
        if self.pose_source not in ("tf", "odometry"):
            raise ValueError("pose_source must be 'tf' or 'odometry'")
        if self.pose_source == "odometry" and not self.odometry_topic:
            raise ValueError("pose_source='odometry' needs odometry_topic")
        if not self.cameras:
            raise ValueError("give at least one camera (image, camera_info and depth topics)")
        if any(cam.depth is None for cam in self.cameras):
            raise ValueError("every camera needs a depth topic (IMAGE,INFO,DEPTH)")


@dataclass
class ConversionReport:
    """Counts of what was written and why frames were skipped; ``warnings``: what the bag
    reader found damaged or cut off (the frames before and after are kept)."""

    scene: Path
    written: int
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


@dataclass
class BagIndex:
    """What the first pass over the bag collects: the pose trees, the last camera_info per
    topic, the header stamps of images and depth, and the frame ids."""

    tf: TfTree
    odom: TfTree
    infos: dict[str, Any] = field(default_factory=dict)
    image_stamps: dict[str, list[float]] = field(default_factory=dict)
    depth_stamps: dict[str, list[float]] = field(default_factory=dict)
    frame_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedFrame:
    """A frame to write: camera, image header time, its depth partner's time, pose."""

    camera: CameraTopics
    stamp: float
    depth_stamp: float
    pose: np.ndarray


def convert_bag(bag: str | Path, out_dir: str | Path, conversion: BagConversion,
                scene_name: str | None = None, progress: bool = False) -> ConversionReport:
    """Convert ``bag`` into the scene folder ``out_dir/<scene_name or bag name>``.

    ``progress`` shows a progress bar for each of the two passes over the bag.
    """
    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} not found (give the rosbag2 folder or file)")
    issues = IssueLog(lambda issue: logger.warning("%s: %s", bag, issue))
    try:
        source = BagSource(bag, issues)
    except BagError as exc:
        raise ValueError(str(exc)) from None
    with source:
        _check_topics(source, conversion)
        index = read_stamps_and_poses(source, conversion, progress)
        plan, skipped = plan_frames(index, conversion)
        images, depths = decode_frames(source, plan, index, progress)
    scene = Path(out_dir) / (scene_name or bag.stem)
    written = write_scene(scene, plan, images, depths, index, conversion)
    if not written:
        raise ValueError(f"no frame of {bag} could be paired and posed: {dict(skipped)}; check "
                         "the topics, --tolerance and the pose source")
    return ConversionReport(scene, written, skipped, [str(issue) for issue in issues.issues])


def _check_topics(source: BagSource, conversion: BagConversion) -> None:
    """Every wanted topic is in the bag, of the expected type, and readable."""
    expected: dict[str, tuple[str, ...]] = {}
    for cam in conversion.cameras:
        expected.update({cam.image: IMAGE_TYPES, cam.info: (CAMERA_INFO,), cam.depth: (IMAGE,)})
    if conversion.odometry_topic:
        expected[conversion.odometry_topic] = (ODOMETRY,)
    missing = sorted(set(expected) - set(source.topics))
    if missing:
        raise ValueError(f"{source.path} has no topic(s) {missing}; it has "
                         f"{sorted(source.topics)}")
    for topic in (*expected, *TF_TOPICS):
        if topic not in source.topics:
            continue
        msgtype = source.topics[topic].msgtype
        kinds = expected.get(topic, (TF_MESSAGE,))
        if msgtype not in kinds:
            raise ValueError(f"{source.path}: {topic} is {msgtype}, expected "
                             f"{' or '.join(kinds)}")
        problem = source.topic_problem(topic)
        if problem is not None:
            raise ValueError(f"{source.path}: {topic} cannot be read: {problem}")


def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _messages(source: BagSource, topics: Iterable[str], desc: str, show: bool
              ) -> Iterator[tuple[BagMessage, Any]]:
    """``(message, deserialised)`` of ``topics``, behind a progress bar when ``show``."""
    topics = [t for t in topics if t in source.topics]
    total = sum(source.topics[t].count for t in topics)
    for message in tqdm(source.messages(topics), total=total, desc=desc, unit="msg",
                        disable=not show, leave=False):
        yield message, deserialize_message(message.raw, source.message_class(message.topic))


def read_stamps_and_poses(source: BagSource, conversion: BagConversion,
                          progress: bool = False) -> BagIndex:
    """Pass 1: transforms, odometry, camera_info and the header stamps of images and depth."""
    index = BagIndex(TfTree(_ns(conversion.max_gap), _ns(conversion.tolerance)),
                     TfTree(_ns(conversion.max_gap), _ns(conversion.tolerance)),
                     image_stamps={c.image: [] for c in conversion.cameras},
                     depth_stamps={c.depth: [] for c in conversion.cameras})
    infos = {c.info for c in conversion.cameras}
    topics = [*TF_TOPICS, *infos, *index.image_stamps, *index.depth_stamps]
    if conversion.odometry_topic:
        topics.append(conversion.odometry_topic)
    for message, msg in _messages(source, dict.fromkeys(topics), "reading stamps and poses",
                                  progress):
        topic = message.topic
        if topic in TF_TOPICS:
            try:
                index.tf.add_tf_messages([msg], static=topic == "/tf_static")
            except TransformError as exc:
                raise ValueError(f"{source.path}: {topic}: {exc}") from None
        elif topic == conversion.odometry_topic:
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            index.odom.set_transform("world", "base", rigid_from_translation_quaternion(
                (p.x, p.y, p.z), (q.x, q.y, q.z, q.w)), _ns(_stamp(msg.header)))
            index.frame_ids["odometry_child"] = msg.child_frame_id
        elif topic in index.image_stamps:
            index.image_stamps[topic].append(_stamp(msg.header))
            index.frame_ids[topic] = msg.header.frame_id
        elif topic in index.depth_stamps:
            index.depth_stamps[topic].append(_stamp(msg.header))
        else:
            index.infos[topic] = msg
    return index


def _nearest(stamps: np.ndarray, t: float) -> int | None:
    if len(stamps) == 0:
        return None
    i = int(np.searchsorted(stamps, t))
    return min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - t))


def plan_frames(index: BagIndex, conversion: BagConversion
                ) -> tuple[list[PlannedFrame], Counter]:
    """Pair each image with its nearest depth, subsample, pose: the frames to write, sorted
    by time then camera, and the counts of skipped images by reason."""
    plan: list[PlannedFrame] = []
    skipped: Counter = Counter()
    for cam in conversion.cameras:
        if cam.info not in index.infos:
            raise ValueError(f"no camera_info message on {cam.info}")
        dstamps = np.array(sorted(index.depth_stamps[cam.depth]))
        last_kept = -np.inf
        for t in sorted(set(index.image_stamps[cam.image])):
            if t - last_kept < conversion.min_interval:
                skipped["subsampled"] += 1
                continue
            j = _nearest(dstamps, t)
            if j is None or abs(dstamps[j] - t) > conversion.tolerance:
                skipped["no depth within tolerance"] += 1
                continue
            pose = _camera_pose(conversion, index, cam, t)
            if pose is None:
                skipped["no pose"] += 1
                continue
            last_kept = t
            plan.append(PlannedFrame(cam, t, float(dstamps[j]), pose))
    plan.sort(key=lambda frame: (frame.stamp, frame.camera.image))
    return plan, skipped


def _camera_pose(conversion: BagConversion, index: BagIndex, cam: CameraTopics, t: float
                 ) -> np.ndarray | None:
    """The camera's pose at header time ``t`` (seconds), or None where the pose source has no
    data around ``t``."""
    optical = index.frame_ids[cam.image]
    try:
        if conversion.pose_source == "tf":
            return index.tf.lookup(conversion.fixed_frame, optical, _ns(t))
        base_from_cam = conversion.base_from_camera.get(optical)
        if base_from_cam is None:
            base = index.frame_ids.get("odometry_child", "base_link")
            try:
                base_from_cam = index.tf.lookup(base, optical, _ns(t))
            except TransformError as exc:
                raise ValueError(f"no transform {base} → {optical} ({exc}): record /tf_static "
                                 "or pass --extrinsic") from None
        return index.odom.lookup("world", "base", _ns(t)) @ base_from_cam
    except ExtrapolationError:
        return None
    except TransformError as exc:
        raise ValueError(f"{optical!r} is not connected to the pose source's frames ({exc}): "
                         "check --fixed-frame and the bag's /tf and /tf_static") from None


def decode_color(msg, msgtype: str, max_pixels: int | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an ``Image`` (:func:`~dvlt_ros.conversions.image.image_to_rgb8`)
    or ``CompressedImage``. A compressed image with more than ``max_pixels`` pixels (its
    camera_info's size) is refused before it is decoded
    (:func:`dvlt_core.io.image_decode.decode_image`)."""
    if msgtype.endswith("CompressedImage"):
        return decode_image(bytes(msg.data), max_pixels, what=f"{msg.format} image",
                            downscale=False).rgb
    return image_to_rgb8(msg)


def decode_depth(msg) -> np.ndarray:
    """float32 metres (H, W) from a ``16UC1``/``mono16`` (mm) or ``32FC1`` (m) image."""
    return depth_metres(image_to_array(msg), msg.encoding)


def decode_frames(source: BagSource, plan: Sequence[PlannedFrame], index: BagIndex,
                  progress: bool = False
                  ) -> tuple[dict[tuple[str, float], np.ndarray], dict[tuple[str, float],
                                                                        np.ndarray]]:
    """Pass 2: decode only the planned images and depth maps, keyed by (topic, header time)."""
    wanted_images = {(f.camera.image, f.stamp): f.camera for f in plan}
    wanted_depths = {(f.camera.depth, f.depth_stamp) for f in plan}
    images: dict[tuple[str, float], np.ndarray] = {}
    depths: dict[tuple[str, float], np.ndarray] = {}
    topics = dict.fromkeys([*index.image_stamps, *index.depth_stamps])
    for message, msg in _messages(source, topics, "decoding images and depth", progress):
        key = (message.topic, _stamp(msg.header))
        if key in wanted_images and key not in images:
            info = index.infos[wanted_images[key].info]
            images[key] = decode_color(msg, message.msgtype, info.width * info.height)
        elif key in wanted_depths and key not in depths:
            depths[key] = decode_depth(msg)
    return images, depths


def write_scene(scene_dir: Path, plan: Sequence[PlannedFrame],
                images: dict[tuple[str, float], np.ndarray],
                depths: dict[tuple[str, float], np.ndarray], index: BagIndex,
                conversion: BagConversion) -> int:
    """Write the planned frames into ``scene_dir``; the number written (0: nothing is
    written). The scene is staged and replaces an old one only once complete, so a failed
    run never leaves new images under an old scene's poses."""
    staged = StagedOutput(scene_dir, overwrite=True)
    try:
        written = _write_frames(staged.staging, plan, images, depths, index, conversion)
    except BaseException:
        staged.discard()
        raise
    if written:
        staged.commit()
    else:
        staged.discard()
    return written


def _write_frames(scene_dir: Path, plan: Sequence[PlannedFrame],
                  images: dict[tuple[str, float], np.ndarray],
                  depths: dict[tuple[str, float], np.ndarray], index: BagIndex,
                  conversion: BagConversion) -> int:
    writer = SceneWriter(scene_dir, is_synthetic=False)
    for frame in plan:
        cam, topic = frame.camera, frame.camera.image
        k, (h, w) = dataset_intrinsics(index.infos[cam.info], conversion.allow_distortion)
        image, depth = images[(topic, frame.stamp)], depths[(cam.depth, frame.depth_stamp)]
        if image.shape[:2] != (h, w):
            raise ValueError(f"{topic}: image {image.shape[:2]} does not match camera_info "
                             f"{(h, w)}")
        if depth.shape != (h, w):
            raise ValueError(
                f"{cam.depth}: depth {depth.shape} is not registered to {topic} {(h, w)}; "
                "record the depth topic aligned to the colour camera (e.g. aligned_depth_to_color)"
            )
        if conversion.max_depth is not None:
            depth = np.where(depth > conversion.max_depth, 0.0, depth)
        writer.add(image, depth, frame.pose, k, camera=topic, stamp=frame.stamp)
    if writer.frames:
        writer.close()
    return len(writer.frames)
