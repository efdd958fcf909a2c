"""Every setting of the reconstruction session, in one ROS-free place: the parameter table
(type, default, range, description, whether it can change while running), the checks of
each value and of values together, and loading from a ROS parameter file plus
``name:=value`` overrides.

The live node declares these as ROS parameters (:mod:`dvlt_ros.node_support.parameters`
derives the rclpy descriptors and verdicts from this table); ``dvlt-ros process`` loads
them with :func:`load_parameters`. ``config/reconstruct.yaml`` holds the same names and
defaults (a test keeps them equal). Read-only parameters are fixed at start; the others
take effect at the next cycle (``backend``, ``checkpoint``, ``device``, ``precision``,
``torch_compile`` reload the model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from dvlt_core.io.image_decode import DEFAULT_MAX_PIXELS
from dvlt_core.model.config import DEFAULT_NUM_STEPS, PATCH_SIZE
from dvlt_core.model.precision import PRECISIONS
from dvlt_ros.pipeline.k_policy import K_LIMITS, K_MODES
from dvlt_ros.pipeline.sync import RESOLUTION_POLICIES

ParamValue = bool | int | float | str | list[str]

#: Name of the node (and of its section in parameter files).
NODE_NAME = "reconstruct_node"
IMAGE_TRANSPORTS = ("raw", "compressed")
INPUT_QOS_CHOICES = ("sensor_data", "reliable")
WORLD_AXES = ("body", "optical")
SCALE_SOURCES = ("none", "rig", "odometry", "depth", "auto")
ANCHORS = ("chain", "tf")
#: ``world_frame``'s default: the node's own frame, which ``anchor: tf`` cannot use.
OWN_WORLD_FRAME = "dvlt_world"


class ParameterError(ValueError):
    """Parameter values the session cannot run with; the message names them and why."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. ``minimum``/``maximum`` are inclusive; ``choices`` lists the allowed
    strings; ``dynamic`` parameters may change at run time."""

    name: str
    default: ParamValue
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    dynamic: bool = False

    def check(self, value: ParamValue) -> str | None:
        """Why ``value`` is not allowed, or None. Ranges are also enforced by rclpy; this
        check covers choices and list contents, and gives the messages the user sees."""
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.minimum is not None and not value >= self.minimum:
            return f"{self.name} must be >= {self.minimum}, got {value!r}"
        if self.maximum is not None and not value <= self.maximum:
            return f"{self.name} must be <= {self.maximum}, got {value!r}"
        return None


def _positive(name: str, default: float, description: str, **kw) -> ParamSpec:
    return ParamSpec(name, default, description, minimum=0.0, maximum=1e9, **kw)


SPECS: tuple[ParamSpec, ...] = (
    # Inputs
    ParamSpec("cameras", ["cam0", "cam1"],
              "camera namespaces; each provides <ns>/image_raw (or <ns>/image_raw/compressed) "
              "and optionally <ns>/camera_info. The first camera is the reference view"),
    ParamSpec("image_transport", "raw",
              "raw: sensor_msgs/Image on <ns>/image_raw (rgb8, bgr8, rgba8, bgra8, mono8, "
              "uyvy/yuv422, yuyv/yuv422_yuy2, bayer_rggb8/bggr8/gbrg8/grbg8); "
              "compressed: sensor_msgs/CompressedImage on <ns>/image_raw/compressed (jpeg, png)",
              choices=IMAGE_TRANSPORTS),
    ParamSpec("use_input_camera_info", False,
              "subscribe to <ns>/camera_info and publish its intrinsics (scaled to the output "
              "size) instead of the predicted ones; invalid CameraInfo falls back to predicted"),
    ParamSpec("input_qos", "sensor_data",
              "sensor_data (best effort, live cameras) or reliable (bag replay: no frame lost)",
              choices=INPUT_QOS_CHOICES),
    ParamSpec("max_pixels", DEFAULT_MAX_PIXELS,
              "images with more pixels are downscaled (aspect kept) on arrival, those with "
              "more than 4x as many (after a JPEG's reduction while decoding) are refused; "
              "depth and camera_info then refer to the downscaled size",
              minimum=1, maximum=2**31 - 1),
    ParamSpec("resolution_policy", "pad",
              "cameras of different sizes: pad (accept, pad the network input) or reject "
              "(drop frames whose size differs from the first camera's)",
              choices=RESOLUTION_POLICIES),
    ParamSpec("lossless", False,
              "bag replay: reconstruct every complete rig snapshot in arrival order (nothing "
              "dropped, no rate limit) and count handled images on ~/consumed for "
              "`dvlt-ros replay --lossless` (see docs/replay.md)"),
    # Synchronisation and windows
    _positive("sync_slop", 0.02,
              "seconds: the stamps of one rig snapshot differ by at most this much"),
    ParamSpec("sync_queue_size", 4,
              "frames kept per camera while waiting for a match (latest wins, drops counted)",
              minimum=1, maximum=100),
    ParamSpec("camera_timeout", 1.0,
              "seconds without frames after which a camera is left out of windows (WARN)",
              minimum=0.001, maximum=1e6),
    _positive("time_jump_threshold", 0.5,
              "seconds: when every camera's stamps fall this far behind their last ones "
              "(looping bag, restarted clock), synchronisation, keyframes and the world reset; "
              "one camera alone is refused (stamp_rejected)"),
    ParamSpec("max_stamp_jump", 10.0,
              "seconds: a stamp this far from the rig's newest one is a jump, used only once "
              "every camera follows it (else refused as a lone outlier); must exceed the "
              "longest frame interval of a camera", minimum=0.001, maximum=1e9),
    ParamSpec("window_timesteps", 3,
              "T: the newest snapshot plus up to T-1 earlier keyframe snapshots per window",
              minimum=1, maximum=64),
    ParamSpec("max_views", 8, "cap on S = cameras x T views per window", minimum=1,
              maximum=256),
    _positive("keyframe_min_spacing", 0.25,
              "seconds between keyframe snapshots at least"),
    ParamSpec("keyframe_min_change", 0.02,
              "mean absolute grey-level change (0..1) a snapshot needs to become a keyframe",
              minimum=0.0, maximum=1.0),
    # Cycle and loop steps
    ParamSpec("rate", 2.0, "target cycles per second (each takes the newest complete window)",
              minimum=0.01, maximum=1000.0),
    ParamSpec("num_steps", DEFAULT_NUM_STEPS,
              "K, loop steps of the model in fixed mode (more: better, slower); applies at the "
              "next cycle", minimum=K_LIMITS[0], maximum=K_LIMITS[1], dynamic=True),
    ParamSpec("num_steps_mode", "fixed",
              "fixed: K = num_steps; budget: every cycle the largest K whose predicted "
              "latency fits latency_budget_ms", choices=K_MODES, dynamic=True),
    ParamSpec("latency_budget_ms", 500.0,
              "budget mode: target milliseconds of one cycle (inference and node work)",
              minimum=1.0, maximum=1e7, dynamic=True),
    ParamSpec("budget_min_num_steps", 1, "budget mode: smallest K",
              minimum=K_LIMITS[0], maximum=K_LIMITS[1], dynamic=True),
    ParamSpec("budget_max_num_steps", DEFAULT_NUM_STEPS, "budget mode: largest K",
              minimum=K_LIMITS[0], maximum=K_LIMITS[1], dynamic=True),
    # Model
    ParamSpec("backend", "torch",
              "inference backend (torch; onnxruntime and tensorrt where installed)",
              dynamic=True),
    ParamSpec("checkpoint", "nvidia/dvlt",
              "Hugging Face repo id[@revision], checkpoint directory or weights file (not "
              "empty); changing it loads the new model beside the running one, which keeps "
              "reconstructing until the new one is ready (a failed load keeps the old model)",
              dynamic=True),
    ParamSpec("device", "auto", "auto (cuda if available), cpu, cuda or cuda:N", dynamic=True),
    ParamSpec("precision", "fp32",
              "fp32, bf16 or fp16 (torch: autocast on CUDA; onnxruntime/tensorrt: typed graphs)",
              choices=PRECISIONS, dynamic=True),
    ParamSpec("torch_compile", False,
              "backend torch only (refused with another): torch.compile the model's "
              "transformer parts; each new input shape then compiles once (minutes on a small "
              "CPU), and it measured no faster than eager on a 2-core CPU (docs/model.md)",
              dynamic=True),
    ParamSpec("torch_threads", 0,
              "intra-op CPU threads of torch (torch.set_num_threads) on the thread that runs "
              "the cycles; 0: torch's default (OMP_NUM_THREADS, else one per core). On CUDA "
              "it governs the CPU-side torch work (pre/post-processing, pose fitting)",
              minimum=0, maximum=1024, dynamic=True),
    ParamSpec("img_size", 0,
              "network input size: the longer image side is resized to this many pixels, "
              "then cropped to a multiple of the 14 px patch; 0: the model's own",
              minimum=0, maximum=4096),
    # Outputs
    ParamSpec("world_frame", OWN_WORLD_FRAME, "frame of the cloud, trajectory, frusta and TF root"),
    ParamSpec("world_axes", "body",
              "body: world_frame is the first reference camera's body frame (REP 103: x "
              "forward, y left, z up), upright in RViz when that camera was level; optical: "
              "its optical frame (x right, y down, z forward)", choices=WORLD_AXES),
    ParamSpec("frame_suffix", "_dvlt",
              "TF child frame of a camera = its image frame_id + this suffix, so no frame "
              "already in TF gets a second parent"),
    ParamSpec("confidence_threshold", 1.5,
              "cloud: keep pixels with predicted confidence >= this (confidences are >= 1)",
              minimum=0.0, maximum=1e6, dynamic=True),
    ParamSpec("cloud_stride", 2,
              "cloud: take every n-th pixel in x and y (1: all pixels)", minimum=1, maximum=64,
              dynamic=True),
    ParamSpec("max_points", 300_000, "cloud: at most this many points (random subset beyond)",
              minimum=1, maximum=2**31 - 1, dynamic=True),
    ParamSpec("frustum_scale", 0.2, "length of the RViz frustum markers in world units",
              minimum=0.0, maximum=1e3, dynamic=True),
    ParamSpec("trajectory_length", 2000, "poses kept in the published trajectory",
              minimum=1, maximum=1_000_000),
    ParamSpec("diagnostics_period", 1.0,
              "seconds between /diagnostics messages when no cycle runs", minimum=0.05,
              maximum=3600.0),
    # Grounding: metric scale and the robot's frames (docs/world_frame.md)
    ParamSpec("scale_source", "none",
              "metric scale: none (up to scale), rig (camera baselines from TF "
              "base_frame -> image frame_ids), odometry (camera motion from TF odom_frame -> "
              "base_frame), depth (a depth topic per camera), auto (the best available: rig, "
              "depth, odometry)", choices=SCALE_SOURCES),
    ParamSpec("anchor", "chain",
              "chain: each window continues the previous ones in world_frame (its own frame); "
              "tf: world_frame is a TF frame of the robot (odom, map) and each window is "
              "aligned to the cameras' TF poses at the image stamps", choices=ANCHORS),
    ParamSpec("odom_frame", "odom", "TF frame of the robot's odometry (scale_source odometry)"),
    ParamSpec("base_frame", "base_link",
              "TF frame of the robot base the cameras are mounted on (rig, odometry)"),
    ParamSpec("depth_topic", "depth/image_raw",
              "depth image topic relative to each camera namespace (16UC1 mm or 32FC1 m; its "
              "CameraInfo is the sibling camera_info); used by scale_source depth and auto"),
    ParamSpec("min_baseline", 0.05,
              "metres: rig camera pairs closer than this give no scale constraint",
              minimum=0.001, maximum=1e3),
    ParamSpec("min_motion", 0.05,
              "metres: camera motions between snapshots shorter than this give no odometry "
              "scale constraint", minimum=0.001, maximum=1e3),
    # Loop closure (docs/world_frame.md "Loop closure")
    ParamSpec("loop_closure", False,
              "keyframe graph with place recognition and loop closure: publishes map_frame -> "
              "world_frame, the corrected trajectory and the re-placed map cloud (needs GTSAM "
              "and place descriptors: the model's encoder)"),
    ParamSpec("loop_verify_per_cycle", 1,
              "loop candidates verified (one model run each) in the spare time after a cycle",
              minimum=0, maximum=16, dynamic=True),
    ParamSpec("loop_odometry_rotation_sigma", 0.02,
              "odometry edges (TF odometry, metric world): rotation sigma in rad per rad "
              "turned between keyframes", minimum=0.0, maximum=10.0),
    ParamSpec("loop_odometry_translation_sigma", 0.02,
              "odometry edges: translation sigma in metres per metre travelled between "
              "keyframes", minimum=0.0, maximum=10.0),
    ParamSpec("loop_odometry_min_rotation_sigma", 0.002,
              "odometry edges: rotation sigma floor (rad)", minimum=1e-6, maximum=10.0),
    ParamSpec("loop_odometry_min_translation_sigma", 0.005,
              "odometry edges: translation sigma floor (metres)", minimum=1e-6, maximum=1e3),
    ParamSpec("map_frame", "map", "TF frame of the loop-corrected map (parent of world_frame)"),
    ParamSpec("map_voxel", 0.05, "voxel of the map cloud in world units (one point per voxel)",
              minimum=0.001, maximum=1e3),
    ParamSpec("map_max_points", 1_000_000,
              "map cloud: at most this many voxels (beyond, the voxel doubles)",
              minimum=1, maximum=100_000_000),
)

SPECS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in SPECS}
RELOAD_PARAMETERS = ("backend", "checkpoint", "device", "precision", "torch_compile")
EMPTY_CHECKPOINT = (
    "checkpoint must not be empty: name a Hugging Face repo id (e.g. nvidia/dvlt), a "
    "checkpoint directory or a weights file"
)


def defaults() -> Mapping[str, ParamValue]:
    return {spec.name: spec.default for spec in SPECS}


def camera_label(namespace: str) -> str:
    """Name of a camera in output topics and diagnostics: its namespace without the
    leading and trailing slashes (``/rig/front/`` -> ``rig/front``)."""
    return namespace.strip("/")


def check_value(name: str, value: ParamValue, *, checkpoint_required: bool = True) -> str | None:
    """Why ``value`` is refused for parameter ``name``, or None; names this table does not
    own (e.g. ``use_sim_time``) pass.

    ``checkpoint_required=False`` (a session given its backend by the caller, where the
    checkpoint only labels it) lets an empty checkpoint pass."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return None
    problem = spec.check(value)
    if problem is None and name == "cameras":
        problem = _check_cameras(value)
    if problem is None and name == "img_size" and 0 < value < PATCH_SIZE:
        problem = f"img_size must be 0 (the model's) or >= {PATCH_SIZE}, got {value}"
    if problem is None and name == "checkpoint" and checkpoint_required and not str(
            value).strip():
        problem = EMPTY_CHECKPOINT
    if problem is None and name in ("world_frame", "frame_suffix", "odom_frame", "base_frame",
                                    "map_frame"):
        problem = _check_frame_part(name, str(value))
    if problem is None and name == "depth_topic":
        problem = _check_depth_topic(str(value))
    return problem


def _check_frame_part(name: str, value: str) -> str | None:
    """A TF frame id (``world_frame``) or the suffix that makes the camera frames
    (``frame_suffix``): tf2 refuses empty ids and a leading '/'; an empty suffix would give
    a camera's image frame a second parent."""
    if not value or value != value.strip() or " " in value:
        return f"{name} must be a non-empty name without spaces, got {value!r}"
    if name != "frame_suffix" and value.startswith("/"):
        return f"{name} must not start with '/' (tf2 frame ids do not), got {value!r}"
    return None


def _check_depth_topic(value: str) -> str | None:
    """A topic name relative to a camera namespace (``<ns>/<depth_topic>``)."""
    if not value or value.startswith(("/", "~")) or value != value.strip():
        return (f"depth_topic must be a topic name relative to the camera namespace (e.g. "
                f"depth/image_raw), got {value!r}")
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    try:
        validate_topic_name(f"cam/{value}")
    except InvalidTopicNameException as exc:
        reason = str(exc).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
        return f"depth_topic {value!r} is not a valid ROS name: {reason}"
    return None


def check_values(values: Iterable[tuple[str, ParamValue]], *,
                 checkpoint_required: bool = True) -> str | None:
    """The problems of ``(name, value)`` pairs checked one by one, joined, or None."""
    problems = [p for name, value in values
                if (p := check_value(name, value, checkpoint_required=checkpoint_required))]
    return "; ".join(problems) or None


def check_combination(values: Mapping[str, ParamValue]) -> str | None:
    """Why a set of values that each pass alone cannot go together, or None."""
    problems = []
    low, high = values["budget_min_num_steps"], values["budget_max_num_steps"]
    if low > high:
        problems.append(
            f"budget_min_num_steps ({low}) must be <= budget_max_num_steps ({high})")
    if values["torch_compile"] and values["backend"] != "torch":
        problems.append(
            f"torch_compile applies to backend torch only, the backend is "
            f"{values['backend']!r}: set torch_compile to false (before or together with the "
            "backend) or use backend torch")
    problems += _grounding_problems(values)
    if values["loop_closure"] and values["map_frame"] == values["world_frame"]:
        problems.append(f"map_frame and world_frame must differ (map_frame -> world_frame is "
                        f"the loop correction), both are {values['map_frame']!r}")
    return "; ".join(problems) or None


def _grounding_problems(values: Mapping[str, ParamValue]) -> list[str]:
    """What ``scale_source`` and ``anchor`` need from the other values."""
    problems = []
    source, world = values["scale_source"], values["world_frame"]
    odom, base = values["odom_frame"], values["base_frame"]
    if values["anchor"] == "tf" and world == OWN_WORLD_FRAME:
        problems.append(
            f"anchor tf needs world_frame to be a TF frame of the robot (e.g. odom or map), "
            f"not the node's own {OWN_WORLD_FRAME!r}")
    if source == "odometry" and values["window_timesteps"] < 2:
        problems.append(
            "scale_source odometry measures motion between the snapshots of a window: set "
            "window_timesteps >= 2")
    if source in ("odometry", "auto") and odom == base:
        problems.append(f"odom_frame and base_frame must differ, both are {odom!r}")
    if source in ("rig", "odometry", "auto") and base == world:
        problems.append(
            f"base_frame ({base!r}) must not be world_frame: the rig's mounts are looked up "
            "in the base frame, the world is where the base moves")
    return problems


def _check_cameras(names: list[str]) -> str | None:
    if not names:
        return "cameras must list at least one camera namespace"
    labels = [camera_label(n) for n in names]
    if any(not label for label in labels) or len(set(labels)) != len(labels):
        return f"cameras must be distinct, non-empty namespaces, got {list(names)}"
    # ROS's own name rules (rclpy's validator), imported here only: the rest of the
    # table is plain Python.
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    for label in labels:
        try:  # the output topics ~/<label>/... are the strictest names built from it
            validate_topic_name(f"{label}/depth")
        except InvalidTopicNameException as exc:
            reason = str(exc).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
            return f"camera namespace {label!r} is not a valid ROS name: {reason}"
    return None


def file_parameters(path: str | Path, node_name: str = NODE_NAME) -> dict[str, object]:
    """The ``ros__parameters`` of ``node_name`` (and of ``/**``) in a ROS parameter file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read parameter file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ParameterError(
            f"{path} is not a ROS parameter file (expected '<node>: ros__parameters:')")
    values: dict[str, object] = {}
    for key in ("/**", "**", node_name, "/" + node_name):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            values.update(section["ros__parameters"])
    if not values:
        raise ParameterError(f"{path} has no 'ros__parameters' for {node_name} (sections: "
                             f"{', '.join(map(str, data))})")
    return values


def parse_override(item: str) -> tuple[str, object]:
    """``"num_steps:=4"`` -> ``("num_steps", 4)`` (the value is read as YAML, like
    ``--ros-args -p``)."""
    if ":=" not in item:
        raise ParameterError(
            f"parameter {item!r} must have the form name:=value (e.g. num_steps:=4)")
    name, text = item.split(":=", 1)
    return name.strip(), yaml.safe_load(text)


def load_parameters(
    params_file: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, object] = (),
    node_name: str = NODE_NAME,
) -> dict[str, object]:
    """The defaults, updated by the file and the overrides, each value and their
    combination checked (:class:`ParameterError` lists every problem)."""
    values = dict(defaults())
    if params_file is not None:
        values.update(file_parameters(params_file, node_name))
    if isinstance(overrides, Mapping):
        values.update(overrides)
    else:
        values.update(parse_override(item) for item in overrides)
    problems = []
    for name, value in values.items():
        spec = SPECS_BY_NAME.get(name)
        if spec is None:
            if name != "use_sim_time":
                problems.append(f"unknown parameter {name!r}")
            continue
        if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(
                value, bool):
            value = values[name] = float(value)
        if type(value) is not type(spec.default):
            problems.append(f"{name} must be a {type(spec.default).__name__}, got {value!r}")
        elif isinstance(value, list) and not all(isinstance(v, str) for v in value):
            problems.append(f"{name} must be a list of strings, got {value!r}")
    if not problems:
        problem = check_values(values.items()) or check_combination(values)
        if problem:
            problems.append(problem)
    if problems:
        raise ParameterError("invalid parameters: " + "; ".join(problems))
    return values
