"""Helpers for the reconstruct_node tests: one ROS graph per test in this process, a
synthetic rig published as camera topics, and a collector of the node's outputs.

Everything runs over real DDS (loopback, the session's claimed domain).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path as FilePath

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Path
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from dvlt_core.synthetic import SyntheticRig
from dvlt_ros.conversions.camera_info import camera_info_from_intrinsics
from dvlt_ros.conversions.image import array_to_image
from dvlt_ros.conversions.tf import stamp_from_ns
from dvlt_ros.node_support.qos import LATCHED_QOS
from dvlt_ros.nodes.reconstruct_node import ReconstructNode

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BASE_STAMP_NS = 1_700_000_000_000_000_000


def stamp_of(t: float) -> int:
    """The header stamp (ns) used for rig time ``t`` seconds."""
    return BASE_STAMP_NS + round(t * 1e9)


class RosGraph:
    """An rclpy context and executor for one test; nodes added here are spun together."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = []

    def add(self, node):
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def create_node(self, name: str):
        return self.add(rclpy.create_node(name, context=self.context))

    def reconstruct_node(self, backend=None, **params) -> ReconstructNode:
        """A ReconstructNode in this graph with ``params`` overriding the defaults."""
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        node = ReconstructNode(backend=backend, context=self.context,
                               parameter_overrides=overrides)
        return self.add(node)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def spin_until(self, condition, timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while not condition() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
        return bool(condition())

    def close(self) -> None:
        for node in self.nodes:
            node.destroy_node()
        self.executor.shutdown()
        rclpy.shutdown(context=self.context)


class RigPublisher:
    """Publishes a synthetic rig's images (and optionally CameraInfo) as camera topics."""

    def __init__(self, graph: RosGraph, rig: SyntheticRig, camera_info: bool = False) -> None:
        self.graph = graph
        self.rig = rig
        self.node = graph.create_node("synthetic_rig")
        self.images = {n: self.node.create_publisher(Image, f"{n}/image_raw", RELIABLE)
                       for n in rig.names}
        self.infos = (
            {n: self.node.create_publisher(CameraInfo, f"{n}/camera_info", RELIABLE)
             for n in rig.names} if camera_info else {}
        )

    def wait_connected(self, timeout: float = 20.0) -> None:
        pubs = [*self.images.values(), *self.infos.values()]
        assert self.graph.spin_until(
            lambda: all(p.get_subscription_count() for p in pubs), timeout
        ), "the node did not subscribe to the camera topics"

    def header(self, camera: str, stamp_ns: int) -> Header:
        return Header(stamp=stamp_from_ns(stamp_ns), frame_id=self.rig.camera(camera).optical_frame)

    def publish(self, t: float, cameras=None, stamp_ns: int | None = None) -> int:
        """Publish every camera (or ``cameras``) at rig time ``t``; return the stamp."""
        stamp = stamp_of(t) if stamp_ns is None else stamp_ns
        for name in cameras or self.rig.names:
            view = self.rig.render(name, t)
            header = self.header(name, stamp)
            if name in self.infos:
                cam = self.rig.camera(name)
                self.infos[name].publish(
                    camera_info_from_intrinsics(cam.k, cam.width, cam.height, header)
                )
            self.images[name].publish(array_to_image(view.image, "rgb8", header))
        return stamp


class OutputCollector:
    """Subscribes to every output of a reconstruct_node and keeps what arrives."""

    def __init__(self, graph: RosGraph, cameras, node_name: str = "reconstruct_node") -> None:
        self.node = graph.create_node("output_collector")
        self.graph = graph
        self.msgs: dict[str, list] = defaultdict(list)
        base = f"/{node_name}"
        subs = [("points", PointCloud2, f"{base}/points", RELIABLE),
                ("trajectory", Path, f"{base}/trajectory", LATCHED_QOS),
                ("frusta", MarkerArray, f"{base}/frusta", LATCHED_QOS),
                ("tf", TFMessage, "/tf", RELIABLE),
                ("diagnostics", DiagnosticArray, "/diagnostics", RELIABLE)]
        for cam in cameras:
            subs += [(f"{cam}/depth", Image, f"{base}/{cam}/depth", RELIABLE),
                     (f"{cam}/confidence", Image, f"{base}/{cam}/confidence", RELIABLE),
                     (f"{cam}/camera_info", CameraInfo, f"{base}/{cam}/camera_info", RELIABLE)]
        for key, kind, topic, qos in subs:
            self.node.create_subscription(kind, topic, lambda m, k=key: self._store(k, m), qos)

    def _store(self, key: str, msg) -> None:
        items = self.msgs[key]
        items.append(msg)
        del items[:-50]  # keep the newest only: tests look at recent outputs

    def last(self, key: str):
        return self.msgs[key][-1] if self.msgs[key] else None

    def stamped(self, key: str, stamp_ns: int):
        """The newest message on ``key`` whose header stamp is ``stamp_ns`` (or None)."""
        for msg in reversed(self.msgs[key]):
            if msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp_ns:
                return msg
        return None

    def tf_at(self, stamp_ns: int):
        """The newest /tf message whose transforms are stamped ``stamp_ns`` (or None)."""
        for msg in reversed(self.msgs["tf"]):
            if msg.transforms and (msg.transforms[0].header.stamp.sec * 10**9
                                   + msg.transforms[0].header.stamp.nanosec) == stamp_ns:
                return msg
        return None

    def wait_products(self, stamp_ns: int, cameras, timeout: float = 10.0) -> None:
        """Spin until the cloud, TF and every camera's depth/confidence/camera_info of the
        cycle stamped ``stamp_ns`` arrived."""
        keys = ["points"] + [f"{c}/{k}" for c in cameras
                             for k in ("depth", "confidence", "camera_info")]
        ok = self.graph.spin_until(
            lambda: self.tf_at(stamp_ns) is not None
            and all(self.stamped(k, stamp_ns) is not None for k in keys), timeout
        )
        assert ok, f"outputs of the cycle at {stamp_ns} did not all arrive"

    def statuses(self, suffix: str):
        """Diagnostic statuses whose name ends with ``suffix``, newest message first."""
        return [s for array in reversed(self.msgs["diagnostics"]) for s in array.status
                if s.name.endswith(suffix)]

    def wait_status(self, suffix: str, predicate, timeout: float = 10.0):
        """Spin until a status named ``*suffix`` satisfies ``predicate``; return it."""
        found = []

        def check():
            found[:] = [s for s in self.statuses(suffix) if predicate(s)]
            return bool(found)

        self.graph.spin_until(check, timeout)
        return found[0] if found else None


def status_values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def wait_cycle(graph: RosGraph, node: ReconstructNode, stamp_ns: int, timeout: float = 20.0):
    """Spin until the node reported a cycle of the snapshot stamped ``stamp_ns``."""
    ok = graph.spin_until(
        lambda: node.last_report is not None and node.last_report.stamp_ns == stamp_ns, timeout
    )
    assert ok, f"no cycle for stamp {stamp_ns}; last report: {node.last_report}"
    return node.last_report


def level(status) -> int:
    return status.level[0] if isinstance(status.level, bytes) else int(status.level)


def world_points(depth: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
    """(H, W, 3) points of a z-depth map (OpenCV intrinsics, pixel centres at integers)."""
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                       indexing="ij")
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    cam = rays * depth[..., None]
    return cam @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]


def save_small_checkpoint(directory, reference_dir, img_size: int = 56):
    """A ViT-S DVLT checkpoint (the golden small case's config, deterministic weights of
    seed 0) with ``img_size`` as its network size, saved to ``directory``."""
    import json

    from dvlt_core.io.checkpoint import save_checkpoint
    from dvlt_core.model import DVLTConfig, DVLTModel
    from dvlt_core.testing.det_weights import load_deterministic_weights

    case = np.load(reference_dir / "case_small_public.npz")
    config = json.loads(str(case["config_json"]))
    config["img_size"] = img_size
    model = DVLTModel(**DVLTConfig.from_kwargs(config).to_dict())
    load_deterministic_weights(model, 0)
    return save_checkpoint(model, directory)


def node_command() -> list[str]:
    """The installed ``reconstruct_node`` console script (where ``ros2 run`` finds it, or
    on PATH); before the package is installed, the same entry point through ``-m``."""
    for candidate in (FilePath(sys.prefix) / "lib" / "dvlt_ros" / "reconstruct_node",
                      shutil.which("reconstruct_node")):
        if candidate and FilePath(candidate).is_file():
            return [str(candidate)]
    return [sys.executable, "-m", "dvlt_ros.nodes.reconstruct_node"]


class NodeProcess:
    """reconstruct_node as its own process (inheriting the tests' ROS isolation), with
    its output (stdout and stderr together) collected line by line."""

    def __init__(self, ros_args: list[str]) -> None:
        self.proc = subprocess.Popen([*node_command(), "--ros-args", *ros_args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, graph: RosGraph | None = None, timeout: float = 120.0) -> bool:
        """Wait (spinning ``graph``) until a line holds ``text``; False on timeout or exit."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                self._reader.join(5)
                return any(text in line for line in self.lines)
            if graph is None:
                time.sleep(0.05)
            else:
                graph.spin_for(0.05)
        return False

    def finish(self, timeout: float) -> int | None:
        """The exit status within ``timeout`` seconds, or None (the process is then killed)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._reader.join(5)
        return code
