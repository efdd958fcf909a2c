"""What a cycle publishes, as plain arrays: cloud, depth + camera model, TF poses, frusta.

Frames and units: everything is in the world frame of :mod:`dvlt_ros.pipeline.world`;
lengths are metres when the placement is metric, else the world's arbitrary unit. Camera
poses are ``world_from_camera`` of the OpenCV optical frame (x right, y down, z forward),
which is what TF ``world_frame -> child`` expects. The child frame of a camera is its
image's ``frame_id`` plus a suffix (default ``_dvlt``, so it never collides with the
robot's own calibrated frame); the depth images carry that child frame too, so depth +
camera model + TF unproject to the published cloud.

Depth resolution and intrinsics: the depth map is the reconstruction's (original image
pixels by default, or the network crop) with the *predicted* intrinsics mapped to those
pixels, so they match exactly. With ``use_input_camera_info`` the input CameraInfo's K and
size are published instead and the depth is resampled onto that pixel grid: output pixel
(u, v) looks along ray ``K_in^-1 [u, v, 1]``, which lands on ``K_pred K_in^-1 [u, v, 1]``
in the predicted map; as both rays have camera z = 1 the sampled z-depth is the depth of
that pixel. Invalid depth is NaN (REP 118).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dvlt_core.geometry import Sim3
from dvlt_core.result import Reconstruction, ViewReconstruction
from dvlt_ros.pipeline.frames import CameraFrame

CLOUD_VIEWS = ("all", "newest")


@dataclass(frozen=True)
class CloudConfig:
    """Cloud filtering: ``confidence_threshold`` (absolute, or ``"P%"`` to drop the P
    percent least confident pixels), ``stride`` (keep every n-th pixel per axis),
    ``voxel_size`` (world units; 0 = off; one point per voxel, the most confident),
    ``max_points`` (evenly subsampled above it), ``views`` (``"all"`` window views or the
    ``"newest"`` snapshot's only)."""

    confidence_threshold: float | str = 0.0
    stride: int = 1
    voxel_size: float = 0.0
    max_points: int = 200_000
    views: str = "all"

    def __post_init__(self) -> None:
        if self.stride < 1 or self.max_points < 1 or self.voxel_size < 0:
            raise ValueError("stride and max_points must be >= 1 and voxel_size >= 0")
        if self.views not in CLOUD_VIEWS:
            raise ValueError(f"cloud views must be one of {CLOUD_VIEWS}, got {self.views!r}")


@dataclass(frozen=True)
class PointCloud:
    """``points`` (N, 3) float32 world, ``colors`` (N, 3) uint8 RGB, ``confidence`` (N,)."""

    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class CameraModel:
    """What goes into the CameraInfo published with a depth image (no distortion)."""

    k: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class DepthImage:
    """Depth (h, w) float32 z-depth (NaN invalid) and confidence of one camera."""

    camera: str
    stamp_ns: int
    frame_id: str
    depth: np.ndarray
    confidence: np.ndarray
    camera_model: CameraModel


@dataclass(frozen=True)
class CameraPose:
    """``world_from_camera`` (4x4, rigid) of a camera's optical frame ``child_frame_id``."""

    camera: str
    stamp_ns: int
    child_frame_id: str
    world_from_camera: np.ndarray


@dataclass(frozen=True)
class Frustum:
    """Apex and the four image corners at distance ``size`` (``vertices`` (5, 3) world)
    and the eight edges as vertex index pairs ``edges`` (8, 2)."""

    camera: str
    stamp_ns: int
    vertices: np.ndarray
    edges: np.ndarray


FRUSTUM_EDGES = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])


def child_frame_id(frame: CameraFrame, suffix: str) -> str:
    """TF child frame of a camera: its image's frame_id (or the camera name) + ``suffix``."""
    return f"{frame.frame_id or frame.camera}{suffix}"


def build_cloud(
    reconstruction: Reconstruction,
    world_from_window: Sim3,
    config: CloudConfig,
    view_indices: list[int],
) -> PointCloud:
    """World-frame cloud of the given views (pose-valid ones only), filtered per config.

    Points come in view order, row-major within a view. Pixels are picked by index and
    gathered once into the output arrays (no per-view concatenations of full maps); only
    the points that survive ``max_points`` are transformed when no voxel grid is used."""
    cut = reconstruction.confidence_threshold(config.confidence_threshold)
    picks = []
    for i in view_indices:
        if reconstruction.views[i].pose_valid:
            pick = _pick_pixels(reconstruction.views[i], cut, config.stride)
            if len(pick.pixels):
                picks.append(pick)
    if not picks:
        return PointCloud(
            np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
        )
    window_points = np.concatenate([p.points for p in picks])
    if config.voxel_size > 0:
        world = world_from_window.apply_points(window_points)
        cells = np.floor(world / config.voxel_size).astype(np.int64)
        conf = np.concatenate([p.view.confidence.reshape(-1)[p.pixels] for p in picks])
        order = np.lexsort((-conf, *cells.T[::-1]))
        _, first = np.unique(cells[order], axis=0, return_index=True)
        keep = np.sort(order[first])
        if len(keep) > config.max_points:
            keep = keep[_even_subsample(len(keep), config.max_points)]
        points = world[keep].astype(np.float32, order="C")
    else:
        keep = None
        if len(window_points) > config.max_points:
            keep = _even_subsample(len(window_points), config.max_points)
            window_points = np.take(_rows(window_points), keep).view(
                window_points.dtype).reshape(-1, 3)
        points = world_from_window.apply_points(window_points).astype(np.float32, order="C")
    colors, confidence = _gather_colors_confidence(picks, keep, len(points))
    return PointCloud(points, colors, confidence)


class _Pick(NamedTuple):
    """The pixels of one view that enter the cloud: flat indices into its (h, w) maps
    and their (n, 3) window-frame points."""

    pixels: np.ndarray
    points: np.ndarray
    view: ViewReconstruction


def _pick_pixels(view: ViewReconstruction, cut: float, stride: int) -> _Pick:
    """Every ``stride``-th pixel per axis of ``view`` that is valid, confident, has
    positive depth and a finite point."""
    height, width = view.confidence.shape
    mask = (
        view.valid[::stride, ::stride]
        & (view.confidence[::stride, ::stride] >= cut)
        & (view.depth[::stride, ::stride] > 0)
    )
    rows, cols = np.nonzero(mask)
    pixels = rows * (stride * width) + cols * stride
    world = np.ascontiguousarray(view.world_points).reshape(height * width, 3)
    points = np.take(_rows(world), pixels).view(world.dtype).reshape(-1, 3)
    if not np.isfinite(points).all():  # rare: the row-wise test only when needed
        finite = np.isfinite(points).all(-1)
        pixels, points = pixels[finite], points[finite]
    return _Pick(pixels, points, view)


def _rows(array: np.ndarray) -> np.ndarray:
    """An (n, c) array as n opaque items, so that gathering rows copies whole items."""
    array = np.ascontiguousarray(array)
    return array.view(np.dtype((np.void, array.shape[1] * array.itemsize)))[:, 0]


def _even_subsample(count: int, limit: int) -> np.ndarray:
    """``limit`` indices spread evenly over ``count`` items (first and last kept)."""
    return np.linspace(0, count - 1, limit).round().astype(np.int64)


def _gather_colors_confidence(
    picks: list[_Pick],
    keep: np.ndarray | None,
    count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Colours and confidences of the picked pixels (``keep``: the sorted positions in the
    concatenated picks that remain, None: all), gathered straight into the outputs."""
    colors = np.empty((count, 3), np.uint8)
    confidence = np.empty(count, np.float32)
    color_items, start, first = _rows(colors), 0, 0
    for pixels, _, view in picks:
        end = first + len(pixels)  # this view's positions in the concatenated picks
        if keep is not None:
            lo, hi = np.searchsorted(keep, (first, end))
            pixels = pixels[keep[lo:hi] - first]
        first = end
        stop = start + len(pixels)
        height, width = view.confidence.shape
        image = np.asarray(view.image, np.uint8).reshape(height * width, 3)
        np.take(_rows(image), pixels, out=color_items[start:stop])
        np.take(np.asarray(view.confidence, np.float32).reshape(-1), pixels,
                out=confidence[start:stop])
        start = stop
    return colors, confidence


def build_depth(
    view: ViewReconstruction,
    frame: CameraFrame,
    world_from_window: Sim3,
    suffix: str,
    use_input_camera_info: bool = False,
) -> DepthImage:
    """Depth image + matching camera model of one view, scaled to world units."""
    # The product is a new array (the arithmetic, and its rounding, of the scale's type):
    # invalid pixels are set in place and a float32 product is not copied again.
    depth = view.depth * world_from_window.scale
    depth[~(view.valid & (view.depth > 0))] = np.nan
    confidence = np.where(view.valid, view.confidence, np.float32(0.0))
    k = np.asarray(view.intrinsics, dtype=np.float64)
    if use_input_camera_info and frame.info is not None:
        depth, confidence = resample_to_intrinsics(
            depth, confidence, k, frame.info.k, frame.info.height, frame.info.width
        )
        k = np.asarray(frame.info.k, dtype=np.float64)
    height, width = depth.shape
    return DepthImage(
        frame.camera,
        frame.stamp_ns,
        child_frame_id(frame, suffix),
        depth.astype(np.float32, copy=False),
        confidence.astype(np.float32, copy=False),
        CameraModel(k, width, height),
    )


def resample_to_intrinsics(
    depth: np.ndarray,
    confidence: np.ndarray,
    k_pred: np.ndarray,
    k_out: np.ndarray,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample maps taken with ``k_pred`` onto an ``height`` x ``width`` grid of
    ``k_out`` (same optical frame). Nearest neighbour for depth (no blending across depth
    edges), bilinear for confidence; outside the source map depth is NaN."""
    v, u = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(k_out).T
    src = rays @ np.asarray(k_pred, dtype=np.float64).T
    src_h, src_w = depth.shape
    grid = np.stack(
        [2.0 * (src[..., 0] + 0.5) / src_w - 1.0, 2.0 * (src[..., 1] + 0.5) / src_h - 1.0], -1
    )
    grid_t = torch.from_numpy(grid.astype(np.float32))[None]

    def sample(array: np.ndarray, mode: str) -> np.ndarray:
        source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
        return F.grid_sample(source, grid_t, mode=mode, padding_mode="zeros", align_corners=False)[
            0, 0
        ].numpy()

    inside = (np.abs(grid) <= 1.0).all(-1)
    out_depth = np.where(inside, sample(depth, "nearest"), np.nan)
    out_conf = np.where(inside, sample(np.nan_to_num(confidence), "bilinear"), 0.0)
    return out_depth, out_conf


def camera_pose(
    view: ViewReconstruction, frame: CameraFrame, world_from_window: Sim3, suffix: str
) -> CameraPose:
    """The TF pose of one view's camera in the world."""
    return CameraPose(
        frame.camera,
        frame.stamp_ns,
        child_frame_id(frame, suffix),
        world_from_window.apply_c2w(view.extrinsics_c2w),
    )


def frustum(
    camera: str,
    stamp_ns: int,
    k: np.ndarray,
    width: int,
    height: int,
    world_from_camera: np.ndarray,
    size: float,
) -> Frustum:
    """Frustum of a pinhole camera with its image corners at z-depth ``size``."""
    corners = np.array(
        [
            [-0.5, -0.5, 1.0],
            [width - 0.5, -0.5, 1.0],
            [width - 0.5, height - 0.5, 1.0],
            [-0.5, height - 0.5, 1.0],
        ]
    )
    cam = np.vstack([np.zeros(3), size * corners @ np.linalg.inv(k).T])
    world = cam @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]
    return Frustum(camera, stamp_ns, world, FRUSTUM_EDGES.copy())
