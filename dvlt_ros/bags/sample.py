"""A small multi-camera rosbag2 rendered from the synthetic scene, with ground truth.

Topics (camera namespaces are the rig's camera names, e.g. ``cam_front_left``):

What a robot publishes:

* ``/<cam>/image_raw`` (sensor_msgs/Image rgb8) and ``/<cam>/camera_info`` per frame;
* ``/tf_static`` (latched, once, recorded transient-local so that ``ros2 bag play``
  re-publishes it to late subscribers): ``base_link`` -> ``<cam>_optical_frame`` (the rig);
* ``/tf``: ``odom`` -> ``base_link`` at every frame stamp, the rig's true motion (``odom``
  is the scene's frame, metres), logged ``TF_DELAY_NS`` after its stamp as a robot's
  odometry arrives after the images;
* with ``depth``: ``/<cam>/depth/image_raw`` (16UC1 millimetres, the scene's exact z-depth,
  registered to the colour image: same frame_id, size and K; 0 where nothing is in range)
  and ``/<cam>/depth/camera_info``, logged ``DEPTH_DELAY_NS`` after its stamp.

And for evaluation:

* ``/ground_truth/tf`` (tf2_msgs/TFMessage): ``world`` -> ``base_link`` at every frame
  stamp (the same motion as ``/tf``: this odometry does not drift), kept off ``/tf`` so
  that it never competes with the robot's TF, read by ``dvlt-ros process --gt-tf-topic
  /ground_truth/tf``;
* ``/dvlt_sample/scene`` (std_msgs/String, latched, once): JSON with the generator
  settings, from which :func:`ground_truth_backend` rebuilds the scene.

Every camera of a snapshot has the same stamp (a hardware-synchronised rig); the log time
of each image equals its stamp. ``path``: ``arc`` drives the default rig's circle at its
own speed (a part of it); ``loop`` drives the whole circle ``laps`` times over the bag,
the last snapshot of each lap one step short of its first (a loop closure; with more laps,
every place of the first lap is revisited).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from std_msgs.msg import Header, String

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.synthetic import CircularTrajectory, SyntheticRig, default_rig
from dvlt_ros.bags.issues import BagError
from dvlt_ros.bags.msgtypes import IMAGE
from dvlt_ros.bags.source import BagSource
from dvlt_ros.bags.writer import BagWriter
from dvlt_ros.conversions.camera_info import camera_info_from_intrinsics
from dvlt_ros.conversions.image import ImageConversionError, array_to_image, image_to_rgb8
from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped

SCENE_TOPIC = "/dvlt_sample/scene"
GT_TOPIC = "/ground_truth/tf"
WORLD_FRAME = "world"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
DEPTH_IMAGE = "depth/image_raw"
DEPTH_INFO = "depth/camera_info"
DEFAULT_START_NS = 1_700_000_000_000_000_000
PATHS = ("arc", "loop")
#: /tf and depth are logged this long after their stamps (after the images), as on a robot.
TF_DELAY_NS = 2_000_000
DEPTH_DELAY_NS = 1_000_000
MAX_DEPTH_MM = 65_535


@dataclass(frozen=True)
class SampleBagConfig:
    """What to render: ``frames`` rig snapshots at ``rate_hz`` of ``num_cameras`` cameras of
    ``width`` x ``height`` (:func:`dvlt_core.synthetic.default_rig`, scene ``seed``) along
    ``path``; ``odometry``: ``/tf``, ``depth``: the depth topics (see the module docstring);
    ``laps``: how many times the ``loop`` path drives the circle over the bag."""

    frames: int = 20
    rate_hz: float = 5.0
    num_cameras: int = 2
    width: int = 160
    height: int = 120
    seed: int = 0
    start_ns: int = DEFAULT_START_NS
    camera_info: bool = True
    ground_truth: bool = True
    odometry: bool = True
    depth: bool = False
    path: str = "arc"
    laps: float = 1.0

    def __post_init__(self) -> None:
        if not self.laps > 0:
            raise ValueError(f"laps must be > 0, got {self.laps}")
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if self.frames < 1 or self.rate_hz <= 0:
            raise ValueError(f"frames must be >= 1 and rate_hz > 0, got {self.frames}, "
                             f"{self.rate_hz}")
        if not 1 <= self.num_cameras <= 4:
            raise ValueError(f"num_cameras must be 1..4, got {self.num_cameras}")

    def stamp_ns(self, index: int) -> int:
        return self.start_ns + round(index * 1e9 / self.rate_hz)

    def time_s(self, index: int) -> float:
        """Rig time (seconds) of snapshot ``index``."""
        return index / self.rate_hz

    def rig(self) -> SyntheticRig:
        rig = default_rig(self.width, self.height, self.num_cameras, self.seed)
        if self.path == "arc":
            return rig
        circle = rig.trajectory
        speed = 2 * np.pi * circle.radius * self.rate_hz * self.laps / self.frames
        return SyntheticRig(rig.scene, list(rig.cameras.values()),
                            CircularTrajectory(circle.centre, circle.radius, circle.height,
                                               speed, circle.phase, circle.bob))


def write_sample_bag(
    path: str | Path,
    config: SampleBagConfig | None = None,
    storage: str = "mcap",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render and write the sample bag at ``path`` (a new rosbag2 directory)."""
    config = config or SampleBagConfig()
    rig = config.rig()
    path = Path(path)
    with BagWriter(path, storage) as writer:
        start = config.start_ns
        writer.write(SCENE_TOPIC, String(data=json.dumps(asdict(config))), start, latched=True)
        writer.write("/tf_static", tf_message([
            transform_stamped(rig.camera(name).base_from_camera, BASE_FRAME,
                              rig.camera(name).optical_frame, stamp_from_ns(start))
            for name in rig.names
        ]), start, latched=True)
        for index in range(config.frames):
            stamp = config.stamp_ns(index)
            t = config.time_s(index)
            if config.ground_truth:
                writer.write(GT_TOPIC, tf_message([transform_stamped(
                    rig.world_from_base(t), WORLD_FRAME, BASE_FRAME, stamp_from_ns(stamp))]),
                    stamp)
            views = rig.snapshot(t)
            for view in views:
                cam = rig.camera(view.camera)
                header = Header(stamp=stamp_from_ns(stamp), frame_id=cam.optical_frame)
                if config.camera_info:
                    writer.write(f"/{cam.name}/camera_info",
                                 camera_info_from_intrinsics(cam.k, cam.width, cam.height, header),
                                 stamp)
                writer.write(f"/{cam.name}/image_raw", array_to_image(view.image, "rgb8", header),
                             stamp)
            for view in views if config.depth else ():
                cam = rig.camera(view.camera)
                header = Header(stamp=stamp_from_ns(stamp), frame_id=cam.optical_frame)
                writer.write(f"/{cam.name}/{DEPTH_INFO}",
                             camera_info_from_intrinsics(cam.k, cam.width, cam.height, header),
                             stamp + DEPTH_DELAY_NS)
                writer.write(f"/{cam.name}/{DEPTH_IMAGE}",
                             array_to_image(depth_millimetres(view.depth), "16UC1", header),
                             stamp + DEPTH_DELAY_NS)
            if config.odometry:
                writer.write("/tf", tf_message([transform_stamped(
                    rig.world_from_base(t), ODOM_FRAME, BASE_FRAME, stamp_from_ns(stamp))]),
                    stamp + TF_DELAY_NS)
            if progress is not None:
                progress(index + 1, config.frames)
    return path


def depth_millimetres(depth: np.ndarray) -> np.ndarray:
    """16UC1 pixels (REP 118: millimetres, 0 = no reading) of a z-depth map in metres."""
    mm = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * 1000.0), 0.0)
    return np.where(mm <= MAX_DEPTH_MM, mm, 0).astype(np.uint16)


def read_sample_config(bag: BagSource) -> SampleBagConfig:
    """The generator settings recorded in a sample bag; BagError for other bags."""
    from rclpy.serialization import deserialize_message

    if SCENE_TOPIC not in bag.topics:
        raise BagError(f"{bag.path} was not made by `dvlt-ros sample-bag` (no {SCENE_TOPIC}): "
                       "the ground_truth backend only works on sample bags; use a model "
                       "backend (--backend torch) for other recordings")
    for message in bag.messages([SCENE_TOPIC]):
        try:
            return SampleBagConfig(**json.loads(deserialize_message(message.raw, String).data))
        except (ValueError, TypeError) as exc:  # not JSON, or not the generator's settings
            raise BagError(f"{SCENE_TOPIC} in {bag.path} does not hold the settings of "
                           f"`dvlt-ros sample-bag` ({exc}): write the sample bag again") from None
    raise BagError(f"{SCENE_TOPIC} in {bag.path} holds no readable message")


def ground_truth_backend(bag: BagSource, img_size: int, unscaled: bool = False
                         ) -> GroundTruthBackend:
    """A :class:`GroundTruthBackend` that knows every image of a sample bag (registered
    with the rig's exact camera at the image's stamp), for processing or replaying it;
    ``unscaled``: a :class:`GroundTruthUnscaledBackend` instead (an up-to-scale network:
    a random scale per window, its default pose and depth noise). Images that cannot be
    converted are left out (processing rejects them too)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    config = read_sample_config(bag)
    rig = config.rig()
    cls = GroundTruthUnscaledBackend if unscaled else GroundTruthBackend
    backend = cls(rig.scene, img_size=img_size)
    topics = {f"/{name}/image_raw": name for name in rig.names}
    present = [t for t in topics if t in bag.topics and bag.topics[t].msgtype == IMAGE]
    for message in bag.messages(present):
        msg = deserialize_message(message.raw, Image)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        t = (stamp - config.start_ns) / 1e9
        name = topics[message.topic]
        try:
            rgb = image_to_rgb8(msg)
        except ImageConversionError:
            continue
        backend.register(rgb, rig.intrinsics(name), rig.camera_pose(name, t))
    return backend


def camera_names(config: SampleBagConfig) -> list[str]:
    """The camera namespaces of a sample bag, reference camera first."""
    return list(config.rig().names)


def ground_truth_poses(config: SampleBagConfig, camera: str) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns, camera-to-world 4x4) of one camera over all frames of a sample bag."""
    rig = config.rig()
    stamps = np.array([config.stamp_ns(i) for i in range(config.frames)], dtype=np.int64)
    poses = np.stack([rig.camera_pose(camera, config.time_s(i)) for i in range(config.frames)])
    return stamps, poses


def ground_truth_in_world(config: SampleBagConfig, camera: str, stamps_ns: np.ndarray,
                          in_odom: bool, first_estimate: np.ndarray) -> np.ndarray:
    """True camera-to-world poses (metres) of ``camera`` at ``stamps_ns`` in the output
    world frame: ``odom`` (``in_odom``: the world is the sample's odom frame, the scene's),
    else the reconstruction's own world, defined by the first reference pose, so the truth
    is carried onto ``first_estimate`` at the first stamp."""
    rig = config.rig()
    poses = np.stack([rig.camera_pose(camera, (int(s) - config.start_ns) / 1e9)
                      for s in stamps_ns])
    if in_odom:
        return poses
    return np.asarray(first_estimate, np.float64) @ np.linalg.inv(poses[0]) @ poses
