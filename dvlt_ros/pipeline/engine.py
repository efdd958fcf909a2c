"""``ReconstructionPipeline``: one view window in, everything a cycle publishes out.

``submit(window, num_steps)`` runs the shared :class:`~dvlt_core.inference.Reconstructor`
(preprocess, backend, pose fit, mapping back to original pixels), places the result in the
world (:mod:`~dvlt_ros.pipeline.world`) and computes the products
(:mod:`~dvlt_ros.pipeline.products`). It is deterministic: the same windows in the same
order give the same results, so offline bag processing matches the live node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from dvlt_core.backends.base import BackendOutput, InferenceBackend, StageTimings
from dvlt_core.inference import Reconstructor
from dvlt_core.result import Reconstruction
from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.grounding import (
    Grounding,
    GroundingConfig,
    GroundingStatus,
    TransformLookup,
)
from dvlt_ros.pipeline.products import (
    CameraPose,
    CloudConfig,
    DepthImage,
    Frustum,
    PointCloud,
    build_cloud,
    build_depth,
    camera_pose,
    frustum,
)
from dvlt_ros.pipeline.scale import MeasuredDepth
from dvlt_ros.pipeline.window import ViewWindow
from dvlt_ros.pipeline.world import MetricScale, Placement, WorldAligner, WorldConfig


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of :class:`ReconstructionPipeline`.

    ``resolution``: depth maps and intrinsics at each camera's ``"original"`` pixels or at
    the ``"network"`` crop. ``depth_interpolation``: ``"bilinear"`` (accurate on surfaces)
    or ``"nearest"`` (no blended depth at object edges) for the original-resolution
    resampling.
    ``use_input_camera_info``: the pose fit uses each view's calibrated K (rotation and
    translation only) and depth is published on the input CameraInfo's pixel grid and K
    (where it is valid) instead of the predicted intrinsics. ``frame_suffix``: appended to
    each image's frame_id to name its TF child frame. ``frustum_size``: frustum depth in
    world units.
    """

    resolution: str = "original"
    depth_interpolation: str = "bilinear"
    pose_mode: str = "robust"
    pose_weights: str = "uniform"
    img_size: int | None = None
    use_input_camera_info: bool = False
    frame_suffix: str = "_dvlt"
    cloud: CloudConfig = field(default_factory=CloudConfig)
    frustum_size: float = 0.3


@dataclass(frozen=True)
class CycleTimings:
    """Milliseconds of one cycle. ``inference_ms`` is the backend call; ``pose_fit_ms``
    includes unprojection and the mapping back to original pixels."""

    preprocess_ms: float
    inference_ms: float
    pose_fit_ms: float
    world_ms: float
    products_ms: float
    total_ms: float

    @property
    def post_ms(self) -> float:
        """Everything but the backend (what the K policy's latency model adds to it)."""
        return self.total_ms - self.inference_ms

    def as_dict(self) -> dict[str, float]:
        return {
            "preprocess_ms": self.preprocess_ms,
            "inference_ms": self.inference_ms,
            "pose_fit_ms": self.pose_fit_ms,
            "world_ms": self.world_ms,
            "products_ms": self.products_ms,
            "total_ms": self.total_ms,
        }


@dataclass(frozen=True)
class CycleResult:
    """Everything one cycle produced, in the world frame (metres when ``metric``).

    ``depths``, ``poses`` and ``frusta`` are for the newest snapshot's cameras (stamped
    with their source stamps); ``window_poses`` for every view of the window (the
    trajectories are the session's: :mod:`~dvlt_ros.pipeline.accumulate`).
    """

    stamp_ns: int
    epoch: int
    num_steps: int
    num_views: int
    keys: tuple[tuple[str, int], ...]
    metric: bool
    placement: Placement
    cloud: PointCloud
    depths: tuple[DepthImage, ...]
    poses: tuple[CameraPose, ...]
    window_poses: tuple[CameraPose, ...]
    frusta: tuple[Frustum, ...]
    timings: CycleTimings
    backend_timings: StageTimings
    events: tuple[PipelineEvent, ...]
    reconstruction: Reconstruction = field(repr=False)
    grounding: GroundingStatus | None = None

    @property
    def units(self) -> str:
        """``"m"`` or ``"arbitrary"``: the unit of depth, points and translations."""
        return "m" if self.metric else "arbitrary"


class _TimedBackend(InferenceBackend):
    """Records when the wrapped backend's ``infer`` starts and ends (nothing else)."""

    def __init__(self, inner: InferenceBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.started = self.finished = 0.0

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def img_size(self) -> int:
        return self.inner.img_size

    @property
    def default_num_steps(self) -> int:
        return self.inner.default_num_steps

    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        self.started = time.perf_counter()
        out = self.inner.infer(images, num_steps=num_steps)
        self.finished = time.perf_counter()
        return out


class ReconstructionPipeline:
    """Window → reconstruction → world placement → products. Not thread-safe: call
    ``submit`` from one thread (the node's cycle)."""

    def __init__(
        self,
        backend: InferenceBackend,
        config: PipelineConfig | None = None,
        world: WorldConfig | None = None,
        metric_scale: MetricScale | None = None,
        grounding: GroundingConfig | None = None,
        transforms: TransformLookup | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self._backend = _TimedBackend(backend)
        self.reconstructor = Reconstructor(
            self._backend,
            pose_mode=self.config.pose_mode,
            pose_weights=self.config.pose_weights,
            resolution=self.config.resolution,
            interpolation=self.config.depth_interpolation,
            img_size=self.config.img_size,
        )
        self.grounding = Grounding(grounding, world, transforms=transforms,
                                   backend_metric=backend.metric, metric_scale=metric_scale)
        self._epoch: int | None = None

    @property
    def world(self) -> WorldAligner:
        """The chained world placement (:class:`~dvlt_ros.pipeline.world.WorldAligner`)."""
        return self.grounding.world

    @property
    def backend(self) -> InferenceBackend:
        return self._backend.inner

    def reset(self) -> None:
        """Start a new world (the next window defines it)."""
        self.grounding.reset()

    def submit(
        self,
        window: ViewWindow,
        num_steps: int,
        depths: list[MeasuredDepth | None] | None = None,
    ) -> CycleResult:
        """Reconstruct ``window`` with K = ``num_steps`` loop steps; ``depths``: a measured
        depth image per view (None: none) for ``scale_source`` depth or auto."""
        if len(window) == 0:
            raise ValueError("the window holds no views")
        if self._epoch is not None and window.epoch != self._epoch:
            self.reset()
        self._epoch = window.epoch
        start = time.perf_counter()
        recon = self.reconstructor.reconstruct(
            [f.rgb for f in window.frames],
            num_steps,
            names=[f"{f.camera}@{f.stamp_ns}" for f in window.frames],
            timestamps=[f.stamp_ns * 1e-9 for f in window.frames],
            intrinsics=self._known_intrinsics(window),
        )
        after_recon = time.perf_counter()
        events = list(window.events)
        failed = [
            f.camera for f, v in zip(window.frames, recon.views, strict=True) if not v.pose_valid
        ]
        if failed:
            events.append(
                PipelineEvent(
                    "pose_fit_failed",
                    Level.WARN,
                    f"no pose for {len(failed)} of {len(window)} views ({', '.join(failed)}); "
                    "they are left out of this cycle's products",
                    stamp_ns=window.stamp_ns,
                )
            )
        placement, grounding = self.grounding.place(window, recon, depths)
        events.extend(placement.events)
        after_world = time.perf_counter()
        products = self._products(window, recon, placement)
        end = time.perf_counter()
        timings = CycleTimings(
            preprocess_ms=(self._backend.started - start) * 1e3,
            inference_ms=(self._backend.finished - self._backend.started) * 1e3,
            pose_fit_ms=(after_recon - self._backend.finished) * 1e3,
            world_ms=(after_world - after_recon) * 1e3,
            products_ms=(end - after_world) * 1e3,
            total_ms=(end - start) * 1e3,
        )
        return CycleResult(
            stamp_ns=window.stamp_ns,
            epoch=window.epoch,
            num_steps=recon.num_steps,
            num_views=len(window),
            keys=window.keys,
            metric=placement.metric,
            placement=placement,
            cloud=products[0],
            depths=products[1],
            poses=products[2],
            window_poses=products[3],
            frusta=products[4],
            timings=timings,
            backend_timings=recon.timings,
            events=tuple(events),
            reconstruction=recon,
            grounding=grounding,
        )

    def _known_intrinsics(self, window: ViewWindow) -> list | None:
        """The calibrated K of each view with ``use_input_camera_info`` (None: predict)."""
        if not self.config.use_input_camera_info:
            return None
        known = [None if f.info is None else f.info.k for f in window.frames]
        return known if any(k is not None for k in known) else None

    def _products(self, window: ViewWindow, recon: Reconstruction, placement: Placement) -> tuple:
        cfg = self.config
        sim = placement.world_from_window
        newest = [i for i, step in enumerate(window.timesteps) if step == 0]
        cloud_views = newest if cfg.cloud.views == "newest" else list(range(len(window)))
        cloud = build_cloud(recon, sim, cfg.cloud, cloud_views)
        window_poses = tuple(
            camera_pose(v, f, sim, cfg.frame_suffix)
            for f, v in zip(window.frames, recon.views, strict=True)
            if v.pose_valid
        )
        depths, poses, frusta = [], [], []
        for i in newest:
            view, frame = recon.views[i], window.frames[i]
            if not view.pose_valid:
                continue
            depth = build_depth(view, frame, sim, cfg.frame_suffix, cfg.use_input_camera_info)
            pose = camera_pose(view, frame, sim, cfg.frame_suffix)
            depths.append(depth)
            poses.append(pose)
            model = depth.camera_model
            frusta.append(
                frustum(
                    frame.camera,
                    frame.stamp_ns,
                    model.k,
                    model.width,
                    model.height,
                    pose.world_from_camera,
                    cfg.frustum_size,
                )
            )
        return cloud, tuple(depths), tuple(poses), window_poses, tuple(frusta)
