"""Training samples: pick views of a scene, crop/resize them to the batch size, normalise.

Follows upstream's training pipeline (``TrainDataset.prepare_view`` and
``MultiSourceDataset``): an anchor frame plus ``n − 1`` neighbours (by index window or pose
similarity), each cropped around its principal point, resized with a small overshoot and
cropped to the target size exactly; depth unprojected to world points; then the whole sample
expressed in the first view's camera frame and divided by the mean valid point distance.

Deliberate differences from upstream, all documented in docs/training.md: world points are
unprojected at pixel centres (u + 0.5), consistent with the ray targets (upstream uses integer
pixels here, half a pixel off); no photometric, zoom or 90° rotation augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dvlt_core.training.data.scene import Frame, Scene

RANKINGS = ("index", "pose")
ORDERINGS = ("random", "random_ordered")
RESIZE_SAFE_BOUND = 4  # pixels of overshoot before the exact crop (upstream)


@dataclass(frozen=True)
class ViewSampling:
    """How the views of one sample are chosen (upstream ``TrainDataset`` arguments)."""

    ranking: str = "pose"
    ordering: str = "random_ordered"
    window_size: int | None = None
    window_size_ratio: float | None = 10.0

    def __post_init__(self) -> None:
        if self.ranking not in RANKINGS:
            raise ValueError(f"view ranking must be one of {RANKINGS}, got {self.ranking!r}")
        if self.ordering not in ORDERINGS:
            raise ValueError(f"view ordering must be one of {ORDERINGS}, got {self.ordering!r}")
        if self.window_size is None and self.window_size_ratio is None:
            raise ValueError("set window_size or window_size_ratio")

    def window(self, num_views: int) -> int:
        if self.window_size is not None:
            return self.window_size
        return max(1, int(num_views * self.window_size_ratio))


def target_hw(image_size: int, patch_size: int, aspect_ratio: float) -> tuple[int, int]:
    """(H, W) of a batch: W = ``image_size``, H = ``image_size·aspect`` floored to the patch."""
    height = int(image_size * aspect_ratio)
    height -= height % patch_size
    if height < patch_size:
        raise ValueError(f"aspect ratio {aspect_ratio} gives no full patch row at {image_size} px")
    return height, image_size


def rank_by_pose(anchor: int, poses: np.ndarray) -> np.ndarray:
    """Frame indices sorted by ``angle/180° + ‖Δt‖`` to the anchor (translations scaled to
    unit mean norm), as upstream ranks views."""
    t = poses[:, :3, 3]
    mean_norm = float(np.mean(np.linalg.norm(t, axis=1)))
    if mean_norm > 0:
        t = t / mean_norm
    t_dist = np.linalg.norm(t - t[anchor], axis=1)
    rel = np.einsum("nji,jk->nik", poses[:, :3, :3], poses[anchor, :3, :3])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.argsort(np.degrees(np.arccos(cos)) / 180.0 + t_dist, kind="stable")


def select_views(
    scene: Scene, num_views: int, sampling: ViewSampling, rng: np.random.Generator
) -> np.ndarray:
    """``num_views`` frame indices: a random anchor first, then neighbours (with replacement)."""
    n = len(scene)
    anchor = int(rng.integers(n))
    if num_views == 1:
        return np.array([anchor])
    window = sampling.window(num_views)
    if sampling.ranking == "pose":
        order = rank_by_pose(anchor, scene.poses())
        picks = order[rng.integers(0, min(n, 2 * window), size=num_views - 1)]
    else:
        lo, hi = max(0, anchor - window), min(n, anchor + window)
        picks = rng.integers(lo, hi, size=num_views - 1)
    ids = np.concatenate([[anchor], picks])
    return np.sort(ids) if sampling.ordering == "random_ordered" else ids


def nearest_resize(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resampling at pixel centres."""
    rows = np.minimum(((np.arange(height) + 0.5) * depth.shape[0] / height).astype(int),
                      depth.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * depth.shape[1] / width).astype(int),
                      depth.shape[1] - 1)
    return depth[rows[:, None], cols[None, :]]


def crop_at_principal_point(
    image: np.ndarray, depth: np.ndarray, k: np.ndarray, hw: tuple[int, int], strict: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop a window centred on the principal point: exactly ``hw`` (zero-padded if the image
    is too small there) when ``strict``, else the largest centred window up to ``hw``."""
    src_h, src_w = image.shape[:2]
    cx, cy = float(k[0, 2]), float(k[1, 2])
    if strict:
        half_w, half_h = min(hw[1] / 2, cx), min(hw[0] / 2, cy)
    else:
        half_w = min(hw[1] / 2, cx, src_w - cx)
        half_h = min(hw[0] / 2, cy, src_h - cy)
    x0 = int(np.floor(cx)) - int(np.floor(half_w))
    y0 = int(np.floor(cy)) - int(np.floor(half_h))
    if x0 < 0 or y0 < 0:
        raise ValueError(f"principal point ({cx:.1f}, {cy:.1f}) lies outside the image")
    if strict:
        x1, y1 = x0 + hw[1], y0 + hw[0]
    else:
        x1, y1 = x0 + 2 * int(np.floor(half_w)), y0 + 2 * int(np.floor(half_h))
    image, depth = image[y0:y1, x0:x1], depth[y0:y1, x0:x1]
    k = k.copy()
    k[0, 2] -= x0
    k[1, 2] -= y0
    if strict and image.shape[:2] != tuple(hw):
        pad = ((0, hw[0] - image.shape[0]), (0, hw[1] - image.shape[1]))
        image = np.pad(image, (*pad, (0, 0)))
        depth = np.pad(depth, pad)
    return image, depth, k


def prepare_view(frame: Frame, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop to the largest window centred on the principal point, resize so both sides reach
    ``hw`` + 4 px, crop to ``hw``.

    Returns the image (uint8), depth (float32) and intrinsics of the ``hw`` view.
    """
    image, depth, k = crop_at_principal_point(frame.image, frame.depth, frame.intrinsics,
                                              frame.image.shape[:2], strict=False)
    src_h, src_w = image.shape[:2]
    scale = max((hw[0] + RESIZE_SAFE_BOUND) / src_h, (hw[1] + RESIZE_SAFE_BOUND) / src_w)
    out_w, out_h = int(np.floor(src_w * scale)), int(np.floor(src_h * scale))
    resample = Image.Resampling.LANCZOS if scale < 1.0 else Image.Resampling.BICUBIC
    image = np.asarray(Image.fromarray(image).resize((out_w, out_h), resample))
    depth = nearest_resize(depth, out_h, out_w)
    k = k.copy()
    k[0, :] *= out_w / src_w
    k[1, :] *= out_h / src_h
    return crop_at_principal_point(image, depth, k, hw, strict=True)


def unproject(depth: np.ndarray, k: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(H, W, 3) world points at pixel centres (u + 0.5, v + 0.5)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    x = (u - k[0, 2]) / k[0, 0] * depth
    y = (v - k[1, 2]) / k[1, 1] * depth
    cam = np.stack([x, y, depth.astype(np.float64)], axis=-1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def normalization(
    c2w: np.ndarray, points: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, float]:
    """World→view-0 transform and the scale (mean valid point distance from view 0's camera,
    else the mean camera distance, clamped to [1e-3, 1e3]) that upstream normalises by."""
    w2c0 = np.linalg.inv(c2w[0])
    if masks.any():
        cam0 = points[masks] @ w2c0[:3, :3].T + w2c0[:3, 3]
        scale = float(np.linalg.norm(cam0, axis=-1).mean())
    elif len(c2w) > 1:
        scale = float(np.linalg.norm((w2c0 @ c2w[1:])[:, :3, 3], axis=-1).mean())
    else:
        scale = 1.0
    return w2c0, float(np.clip(scale, 1e-3, 1e3))


def build_sample(
    scene: Scene,
    num_views: int,
    hw: tuple[int, int],
    sampling: ViewSampling,
    rng: np.random.Generator,
) -> dict[str, np.ndarray | float | bool | str]:
    """A training sample of ``num_views`` views picked by ``sampling`` (:func:`frames_sample`)."""
    return frames_sample(scene, select_views(scene, num_views, sampling, rng), hw)


def frames_sample(
    scene: Scene, ids: Sequence[int], hw: tuple[int, int]
) -> dict[str, np.ndarray | float | bool | str]:
    """The normalised sample (numpy) of frames ``ids`` of ``scene`` at size ``hw``.

    Keys: ``images`` (S,3,H,W) float32 in [0,1], ``depths`` (S,H,W), ``extrinsics_c2w``
    (S,4,4), ``intrinsics`` (S,3,3), ``world_points`` (S,H,W,3), ``point_masks`` (S,H,W) bool,
    ``scale_factor``, ``is_synthetic``, ``scene``.
    """
    images, depths, intrinsics, poses, points = [], [], [], [], []
    for i in ids:
        frame = scene.frame(int(i))
        image, depth, k = prepare_view(frame, hw)
        images.append(image)
        depths.append(depth)
        intrinsics.append(k)
        poses.append(np.asarray(frame.c2w, dtype=np.float64))
        points.append(unproject(depth, k, poses[-1]))
    c2w, pts = np.stack(poses), np.stack(points)
    depth = np.stack(depths).astype(np.float64)
    masks = depth > 1e-8
    if not masks[0].any():
        masks[:] = False  # upstream: no supervision without valid points in the reference view
    w2c0, scale = normalization(c2w, pts, masks)
    c2w = w2c0 @ c2w
    c2w[:, :3, 3] /= scale
    pts = (pts @ w2c0[:3, :3].T + w2c0[:3, 3]) / scale
    return {
        "images": np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
        "depths": (depth / scale).astype(np.float32),
        "extrinsics_c2w": c2w.astype(np.float32),
        "intrinsics": np.stack(intrinsics).astype(np.float32),
        "world_points": pts.astype(np.float32),
        "point_masks": masks,
        "scale_factor": scale,
        "is_synthetic": bool(scene.is_synthetic),
        "scene": scene.name,
    }
