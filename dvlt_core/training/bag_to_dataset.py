"""``dvlt-bag-to-dataset``: turn a recorded rosbag2 (sqlite3 or mcap) into a training scene.

For each camera: an image topic (``sensor_msgs/Image`` or ``CompressedImage``), its
``camera_info`` and a depth topic registered to that image (``16UC1``/``mono16`` millimetres or
``32FC1`` metres). Poses come from TF (``/tf`` + ``/tf_static``: the image frame in
``fixed_frame``) or from a ``nav_msgs/Odometry`` topic composed with the static base→camera
transform (from ``/tf_static``, or given). Every image is paired with the depth message nearest
in header time (within ``tolerance``) and posed at its own header time; frames without a depth
partner or a pose are skipped and counted. The result is one scene folder in the dataset format
(:mod:`dvlt_core.training.data.folder`), frames sorted by time, then camera.

The image ``frame_id`` must be the camera's optical frame (x right, y down, z forward, REP 103
``*_optical_frame``); images must be rectified (``image_rect``): distortion is refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dvlt_core.geometry import (
    ExtrapolationError,
    TfTree,
    TransformError,
    rigid_from_translation_quaternion,
)
from dvlt_core.io.image_decode import decode_image
from dvlt_core.training.data.folder import SceneWriter

logger = logging.getLogger(__name__)
DEPTH_ENCODINGS = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


@dataclass(frozen=True)
class CameraTopics:
    """The topics of one camera."""

    image: str
    info: str
    depth: str


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


@dataclass
class ConversionReport:
    """Counts of what was written and why frames were skipped."""

    scene: Path
    written: int
    skipped: Counter = field(default_factory=Counter)


def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def decode_color(msg, msgtype: str, max_pixels: int | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an ``Image`` or ``CompressedImage``. A compressed image
    with more than ``max_pixels`` pixels (its camera_info's size) is refused before it
    is decoded (:func:`dvlt_core.io.image_decode.decode_image`)."""
    if msgtype.endswith("CompressedImage"):
        return decode_image(bytes(msg.data), max_pixels, what=f"{msg.format} image",
                            downscale=False).rgb
    if msg.encoding not in COLOR_ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; use one of "
                         f"{COLOR_ENCODINGS}")
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}[msg.encoding]
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    image = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if msg.encoding == "mono8":
        return np.repeat(image, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        image = image[..., [2, 1, 0]]
    return np.ascontiguousarray(image[..., :3])


def decode_depth(msg) -> np.ndarray:
    """float32 metres (H, W) from a ``16UC1``/``mono16`` (mm) or ``32FC1`` (m) image."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unsupported depth encoding {msg.encoding!r}; use 16UC1 (mm) or "
                         "32FC1 (m)")
    dtype = np.dtype(np.uint16 if msg.encoding != "32FC1" else np.float32)
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    raw = rows[:, : msg.width * dtype.itemsize].copy().view(dtype).reshape(msg.height, msg.width)
    depth = raw.astype(np.float32) * DEPTH_ENCODINGS[msg.encoding]
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def _intrinsics(info, allow_distortion: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """Dataset-convention intrinsics (cx, cy + 0.5) and (H, W) from a ``CameraInfo``."""
    if not allow_distortion and np.any(np.abs(np.asarray(info.d, dtype=np.float64)) > 1e-9):
        raise ValueError(
            "camera_info has non-zero distortion: record the rectified image topic "
            "(image_rect) or pass --allow-distortion to keep the images as they are"
        )
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
    k[0, 2] += 0.5
    k[1, 2] += 0.5
    return k, (int(info.height), int(info.width))


def _nearest(stamps: np.ndarray, t: float) -> int | None:
    if len(stamps) == 0:
        return None
    i = int(np.searchsorted(stamps, t))
    best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - t))
    return best


def convert_bag(bag: str | Path, out_dir: str | Path, conversion: BagConversion,
                scene_name: str | None = None, progress: bool = False) -> ConversionReport:
    """Convert ``bag`` into the scene folder ``out_dir/<scene_name or bag name>``.

    ``progress`` shows a progress bar for each of the two passes over the bag.
    """
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:
        raise ModuleNotFoundError("reading rosbags needs the `rosbags` package: install the "
                                  "`bags` extra (pip install 'dvlt_ros[bags]')") from exc

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} not found (give the rosbag2 folder or file)")
    scene_dir = Path(out_dir) / (scene_name or bag.stem)
    tf = TfTree(_ns(conversion.max_gap), _ns(conversion.tolerance))
    odom = TfTree(_ns(conversion.max_gap), _ns(conversion.tolerance))
    infos: dict[str, object] = {}
    image_stamps: dict[str, list[float]] = {c.image: [] for c in conversion.cameras}
    depth_stamps: dict[str, list[float]] = {c.depth: [] for c in conversion.cameras}
    frame_ids: dict[str, str] = {}
    skipped: Counter = Counter()
    typestore = get_typestore(Stores.ROS2_KILTED)
    with AnyReader([bag], default_typestore=typestore) as reader:
        topics = {c.topic for c in reader.connections}
        wanted = {t for c in conversion.cameras for t in (c.image, c.info, c.depth)}
        if conversion.odometry_topic:
            wanted.add(conversion.odometry_topic)
        missing = sorted(wanted - topics)
        if missing:
            raise ValueError(f"{bag} has no topic(s) {missing}; it has {sorted(topics)}")
        meta = [c for c in reader.connections
                if c.topic in ("/tf", "/tf_static", conversion.odometry_topic)
                or c.topic in {cam.info for cam in conversion.cameras}
                or c.topic in image_stamps or c.topic in depth_stamps]
        # Pass 1: transforms, odometry, camera_info and the header stamps of images and depth.
        for conn, _, raw in _progress(reader, meta, "reading stamps and poses", progress):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic in ("/tf", "/tf_static"):
                try:
                    tf.add_tf_messages([msg], static=conn.topic == "/tf_static")
                except TransformError as exc:
                    raise ValueError(f"{bag}: {conn.topic}: {exc}") from None
            elif conn.topic == conversion.odometry_topic:
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                odom.set_transform("world", "base", rigid_from_translation_quaternion(
                    (p.x, p.y, p.z), (q.x, q.y, q.z, q.w)), _ns(_stamp(msg.header)))
                frame_ids["odometry_child"] = msg.child_frame_id
            elif conn.topic in image_stamps:
                image_stamps[conn.topic].append(_stamp(msg.header))
                frame_ids[conn.topic] = msg.header.frame_id
            elif conn.topic in depth_stamps:
                depth_stamps[conn.topic].append(_stamp(msg.header))
            else:
                infos[conn.topic] = msg

        # Pair images with depth, subsample, pose.
        plan: dict[tuple[str, float], tuple[float, np.ndarray]] = {}
        depth_wanted: set[tuple[str, float]] = set()
        for cam in conversion.cameras:
            if cam.info not in infos:
                raise ValueError(f"no camera_info message on {cam.info}")
            dstamps = np.array(sorted(depth_stamps[cam.depth]))
            last_kept = -np.inf
            for t in sorted(image_stamps[cam.image]):
                if t - last_kept < conversion.min_interval:
                    skipped["subsampled"] += 1
                    continue
                j = _nearest(dstamps, t)
                if j is None or abs(dstamps[j] - t) > conversion.tolerance:
                    skipped["no depth within tolerance"] += 1
                    continue
                pose = _camera_pose(conversion, tf, odom, frame_ids, cam, t)
                if pose is None:
                    skipped["no pose"] += 1
                    continue
                last_kept = t
                plan[(cam.image, t)] = (float(dstamps[j]), pose)
                depth_wanted.add((cam.depth, float(dstamps[j])))

        # Pass 2: decode only the planned images and depth maps.
        cameras = {c.image: c for c in conversion.cameras}
        images: dict[tuple[str, float], np.ndarray] = {}
        depths: dict[tuple[str, float], np.ndarray] = {}
        streams = [c for c in reader.connections if c.topic in image_stamps
                   or c.topic in depth_stamps]
        for conn, _, raw in _progress(reader, streams, "decoding images and depth", progress):
            msg = reader.deserialize(raw, conn.msgtype)
            key = (conn.topic, _stamp(msg.header))
            if key in plan and key not in images:
                info = infos[cameras[conn.topic].info]
                images[key] = decode_color(msg, conn.msgtype, info.width * info.height)
            elif key in depth_wanted and key not in depths:
                depths[key] = decode_depth(msg)

    writer = SceneWriter(scene_dir, is_synthetic=False)
    cams = {c.image: c for c in conversion.cameras}
    for (topic, t), (dt, pose) in sorted(plan.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cam = cams[topic]
        k, (h, w) = _intrinsics(infos[cam.info], conversion.allow_distortion)
        image, depth = images[(topic, t)], depths[(cam.depth, dt)]
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
        writer.add(image, depth, pose, k, camera=topic, stamp=t)
    if not writer.frames:
        raise ValueError(f"no frame of {bag} could be paired and posed: {dict(skipped)}; check "
                         "the topics, --tolerance and the pose source")
    writer.close()
    return ConversionReport(scene_dir, len(writer.frames), skipped)


def _progress(reader, connections, desc: str, show: bool):
    """The bag's messages on ``connections``, behind a progress bar when ``show``."""
    total = sum(conn.msgcount for conn in connections)
    return tqdm(reader.messages(connections=connections), total=total, desc=desc, unit="msg",
                disable=not show, leave=False)


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _camera_pose(conversion, tf: TfTree, odom: TfTree, frame_ids, cam, t) -> np.ndarray | None:
    """The camera's pose at header time ``t`` (seconds), or None where the pose source has no
    data around ``t``."""
    optical = frame_ids[cam.image]
    try:
        if conversion.pose_source == "tf":
            return tf.lookup(conversion.fixed_frame, optical, _ns(t))
        base_from_cam = conversion.base_from_camera.get(optical)
        if base_from_cam is None:
            base = frame_ids.get("odometry_child", "base_link")
            try:
                base_from_cam = tf.lookup(base, optical, _ns(t))
            except TransformError as exc:
                raise ValueError(f"no transform {base} → {optical} ({exc}): record /tf_static "
                                 "or pass --extrinsic") from None
        return odom.lookup("world", "base", _ns(t)) @ base_from_cam
    except ExtrapolationError:
        return None
    except TransformError as exc:
        raise ValueError(f"{optical!r} is not connected to the pose source's frames ({exc}): "
                         "check --fixed-frame and the bag's /tf and /tf_static") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dvlt-bag-to-dataset", description=__doc__.split("\n")[0])
    parser.add_argument("bag", help="rosbag2 folder (sqlite3 or mcap)")
    parser.add_argument("out", help="dataset root; the scene is written to OUT/<name>")
    parser.add_argument("--camera", action="append", required=True, metavar="IMAGE,INFO,DEPTH",
                        help="image, camera_info and registered depth topics (repeatable)")
    parser.add_argument("--pose-source", choices=["tf", "odometry"], default="tf")
    parser.add_argument("--fixed-frame", default="map", help="world frame for TF poses")
    parser.add_argument("--odometry-topic", help="nav_msgs/Odometry topic (pose-source odometry)")
    parser.add_argument("--extrinsic", action="append", default=[],
                        metavar="FRAME=x,y,z,qx,qy,qz,qw",
                        help="base→optical-frame transform when /tf_static lacks it")
    parser.add_argument("--tolerance", type=float, default=0.02, help="seconds (default 0.02)")
    parser.add_argument("--max-gap", type=float, default=0.5,
                        help="longest interpolated pose gap, seconds")
    parser.add_argument("--min-interval", type=float, default=0.0,
                        help="seconds between kept frames per camera")
    parser.add_argument("--max-depth", type=float, help="metres; deeper readings are invalid")
    parser.add_argument("--allow-distortion", action="store_true")
    parser.add_argument("--name", help="scene name (default: the bag name)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cameras = [parse_camera(spec) for spec in args.camera]
        extrinsics = {}
        for item in args.extrinsic:
            frame, sep, values = item.partition("=")
            if not sep:
                raise ValueError(f"--extrinsic {item!r}: give FRAME=x,y,z,qx,qy,qz,qw")
            extrinsics[frame] = extrinsic_matrix(values.split(","))
        conversion = BagConversion(
            cameras, args.pose_source, args.fixed_frame, args.odometry_topic, extrinsics,
            args.tolerance, args.max_gap, args.min_interval, args.max_depth,
            args.allow_distortion,
        )
        report = convert_bag(args.bag, args.out, conversion, args.name, progress=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dvlt-bag-to-dataset: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report.written} frames to {report.scene}; skipped: {dict(report.skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
