"""The reconstruction of a scene: per-view cameras, depth, confidence and points.

Conventions: extrinsics are OpenCV camera-to-world 4×4 matrices (x right, y down, z
forward) in the network's world frame (about the first view's camera frame, up to the
network's scale). Intrinsics are 3×3 pixel matrices in the OpenCV/ROS convention: the
centre of pixel (column u, row v) is at (u, v). Depth is z-depth along the camera axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dvlt_core.backends.base import BackendOutput, StageTimings
from dvlt_core.geometry import unproject_depth
from dvlt_core.io.images import PreprocessedBatch
from dvlt_core.io.view_transforms import ViewTransform, network_to_opencv_intrinsics

RESOLUTIONS = ("original", "network")


@dataclass
class ViewReconstruction:
    """One view. Maps are (h, w) at the reconstruction's resolution.

    ``valid`` marks pixels that have a prediction: at original resolution, pixels that
    the centre crop removed are False (their depth, confidence and points are 0).
    ``pose_valid`` is False when the pose fit failed for this view: its camera is then the
    fitter's fallback and neither it nor the world points are to be trusted.
    """

    name: str
    timestamp: float
    image: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray
    world_points: np.ndarray
    intrinsics: np.ndarray
    extrinsics_c2w: np.ndarray
    pose_valid: bool
    transform: ViewTransform


@dataclass
class Reconstruction:
    """All views of one inference, plus how it was made."""

    views: list[ViewReconstruction]
    resolution: str
    num_steps: int
    pose_mode: str
    pose_enc: np.ndarray | None
    timings: StageTimings | None = None
    #: (S, C) unit-length place descriptors, when the backend exposes its encoder.
    descriptors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.views)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.views]

    @property
    def extrinsics_c2w(self) -> np.ndarray:
        """(S, 4, 4) OpenCV camera-to-world poses."""
        return np.stack([v.extrinsics_c2w for v in self.views])

    @property
    def failed_views(self) -> list[str]:
        """Names of the views whose pose fit failed."""
        return [v.name for v in self.views if not v.pose_valid]

    @property
    def intrinsics(self) -> np.ndarray:
        """(S, 3, 3) intrinsics at this reconstruction's resolution (OpenCV convention)."""
        return np.stack([v.intrinsics for v in self.views])

    def confidence_threshold(self, threshold: float | str) -> float:
        """Resolve a threshold: a number is an absolute confidence (confidences are >= 1);
        a string ``"P%"`` drops the P percent least confident valid pixels of all views."""
        if isinstance(threshold, str):
            text = threshold.strip()
            if not text.endswith("%"):
                return float(text)
            percent = float(text[:-1])
            if not 0.0 <= percent < 100.0:
                raise ValueError(f"percentile threshold must be in [0, 100), got {threshold!r}")
            values = np.concatenate([v.confidence[v.valid] for v in self.views])
            return float(np.percentile(values, percent)) if values.size else 0.0
        return float(threshold)

    def point_cloud(
        self, threshold: float | str = 0.0, include_failed: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points (N, 3) float32 and their colours (N, 3) uint8, keeping valid pixels with
        confidence >= ``threshold`` (see :meth:`confidence_threshold`) of the views whose
        pose fit succeeded (of all views with ``include_failed``)."""
        cut = self.confidence_threshold(threshold)
        points, colors = [np.zeros((0, 3), np.float32)], [np.zeros((0, 3), np.uint8)]
        for view in self.views:
            if not (view.pose_valid or include_failed):
                continue
            keep = view.valid & (view.confidence >= cut) & np.isfinite(view.world_points).all(-1)
            points.append(view.world_points[keep])
            colors.append(view.image[keep])
        return (
            np.concatenate(points).astype(np.float32),
            np.concatenate(colors).astype(np.uint8),
        )


def unproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points (..., h, w, 3) float32 of z-depth maps (..., h, w); ``K`` (..., 3, 3)
    in the OpenCV convention, so the integer pixel coordinates are the pixel centres."""
    points = unproject_depth(
        torch.from_numpy(np.ascontiguousarray(depth)),
        torch.from_numpy(np.asarray(K)),
        torch.from_numpy(np.asarray(c2w)),
        pixel_offset=0.0,
    )
    return points.numpy()


def build_reconstruction(
    raw: BackendOutput,
    extrinsics_c2w: np.ndarray,
    network_intrinsics: np.ndarray,
    pose_valid: np.ndarray,
    batch: PreprocessedBatch,
    originals: Sequence[np.ndarray],
    *,
    names: Sequence[str],
    timestamps: Sequence[float],
    num_steps: int,
    pose_mode: str,
    resolution: str = "original",
    interpolation: str = "bilinear",
) -> Reconstruction:
    """Assemble a :class:`Reconstruction` from raw outputs and fitted cameras.

    ``extrinsics_c2w`` (S, 4, 4) and ``network_intrinsics`` (S, 3, 3) are the cameras of
    the network views as ``rays_to_pose`` returns them (intrinsics with pixel centres at
    (u + 0.5, v + 0.5) of the network canvas); ``pose_valid`` (S,) flags the views whose
    fit succeeded. With ``resolution="original"`` maps are
    resampled (``interpolation`` "bilinear" or "nearest" for depth; confidence is always
    bilinear) to each original image; with ``"network"`` they are each view's valid crop
    of the network canvas, rotation undone, without any resampling.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    depth = raw.depth[0, ..., 0].numpy()
    conf = raw.depth_conf[0].numpy()
    K_canvas = network_to_opencv_intrinsics(np.asarray(network_intrinsics, dtype=np.float64))
    c2w_net = np.asarray(extrinsics_c2w, dtype=np.float64)
    views: list[ViewReconstruction | None] = [None] * len(batch.transforms)
    # Views with equal preprocessing (cameras of one size) are resampled and unprojected
    # together: one sampling grid, one batched call each.
    groups: dict[ViewTransform, list[int]] = {}
    for i, t in enumerate(batch.transforms):
        groups.setdefault(t, []).append(i)
    for t, index in groups.items():
        c2w = np.stack([t.extrinsics_to_original(c2w_net[i]) for i in index])
        if resolution == "original":
            K = np.stack([t.intrinsics_to_original(K_canvas[i]) for i in index])
            d, c, valid = _resample_group(t, depth[index], conf[index], interpolation)
            images = [np.asarray(originals[i]) for i in index]
        else:
            K = np.stack([t.network_crop_intrinsics(K_canvas[i]) for i in index])
            d = np.stack([t.crop_from_network(depth[i]) for i in index])
            c = np.stack([t.crop_from_network(conf[i]) for i in index])
            valid = np.ones(d.shape[1:], dtype=bool)
            net_images = batch.images[0, index].permute(0, 2, 3, 1).numpy()
            images = [
                (t.crop_from_network(image) * 255.0).round().astype(np.uint8)
                for image in net_images
            ]
        points = unproject(d, K, c2w)
        if not valid.all():
            points[:, ~valid] = 0.0
        for j, i in enumerate(index):
            views[i] = ViewReconstruction(
                name=names[i],
                timestamp=float(timestamps[i]),
                image=images[j],
                depth=d[j].astype(np.float32, copy=False),
                confidence=c[j].astype(np.float32, copy=False),
                valid=valid.copy(),
                world_points=points[j],
                intrinsics=K[j],
                extrinsics_c2w=c2w[j],
                pose_valid=bool(pose_valid[i]),
                transform=t,
            )
    return Reconstruction(
        views=views,
        resolution=resolution,
        num_steps=num_steps,
        pose_mode=pose_mode,
        pose_enc=None if raw.pose_enc is None else raw.pose_enc[0].numpy(),
        timings=raw.timings,
        descriptors=None if raw.descriptors is None else raw.descriptors[0].numpy(),
    )


def _resample_group(
    transform: ViewTransform, depth: np.ndarray, conf: np.ndarray, interpolation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (``interpolation``) and confidence (bilinear) maps (n, H, W) of views sharing
    ``transform`` at original resolution, in one call when the modes agree, and the mask."""
    if interpolation == "bilinear":
        both, valid = transform.resample_maps_to_original(np.concatenate([depth, conf]))
        return both[: len(depth)], both[len(depth):], valid
    d, valid = transform.resample_maps_to_original(depth, mode=interpolation)
    c, _ = transform.resample_maps_to_original(conf, mode="bilinear")
    return d, c, valid
