"""A small multi-camera rosbag2 rendered from the synthetic scene, with ground truth.

Topics (camera namespaces are the rig's camera names, e.g. ``cam_front_left``):

* ``/<cam>/image_raw`` (sensor_msgs/Image rgb8) and ``/<cam>/camera_info`` per frame;
* ``/tf_static`` (latched, once): ``base_link`` -> ``<cam>_optical_frame`` (the rig);
* ``/ground_truth/tf`` (tf2_msgs/TFMessage): ``world`` -> ``base_link`` at every frame
  stamp; kept off ``/tf`` so that it never competes with the reconstruction's TF, and read
  by ``dvlt-ros process --gt-tf-topic /ground_truth/tf`` for evaluation;
* ``/dvlt_sample/scene`` (std_msgs/String, latched, once): JSON with the generator
  settings, from which :func:`ground_truth_backend` rebuilds the scene.

Every camera of a snapshot has the same stamp (a hardware-synchronised rig); the log time
of each message equals its stamp.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from std_msgs.msg import Header, String

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.synthetic import SyntheticRig, default_rig
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
BASE_FRAME = "base_link"
DEFAULT_START_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class SampleBagConfig:
    """What to render: ``frames`` rig snapshots at ``rate_hz`` of ``num_cameras`` cameras of
    ``width`` x ``height`` (:func:`dvlt_core.synthetic.default_rig`, scene ``seed``)."""

    frames: int = 20
    rate_hz: float = 5.0
    num_cameras: int = 2
    width: int = 160
    height: int = 120
    seed: int = 0
    start_ns: int = DEFAULT_START_NS
    camera_info: bool = True
    ground_truth: bool = True

    def __post_init__(self) -> None:
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
        return default_rig(self.width, self.height, self.num_cameras, self.seed)


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
            for view in rig.snapshot(t):
                cam = rig.camera(view.camera)
                header = Header(stamp=stamp_from_ns(stamp), frame_id=cam.optical_frame)
                if config.camera_info:
                    writer.write(f"/{cam.name}/camera_info",
                                 camera_info_from_intrinsics(cam.k, cam.width, cam.height, header),
                                 stamp)
                writer.write(f"/{cam.name}/image_raw", array_to_image(view.image, "rgb8", header),
                             stamp)
            if progress is not None:
                progress(index + 1, config.frames)
    return path


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


def ground_truth_backend(bag: BagSource, img_size: int) -> GroundTruthBackend:
    """A :class:`GroundTruthBackend` that knows every image of a sample bag (registered
    with the rig's exact camera at the image's stamp), for processing or replaying it.
    Images that cannot be converted are left out (processing rejects them too)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    config = read_sample_config(bag)
    rig = config.rig()
    backend = GroundTruthBackend(rig.scene, img_size=img_size)
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
