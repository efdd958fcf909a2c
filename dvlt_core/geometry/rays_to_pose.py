"""Camera poses and intrinsics from per-pixel world rays (the DVLT postprocessing step).

The rays are reduced to the patch grid, a homography from an identity camera to the ray
directions is estimated with RANSAC and split into the camera-to-world rotation and the
intrinsics; the translation is a weighted mean of the ray origins.

``mode="upstream"`` reproduces upstream ``rays_to_pose`` (``nv-tlabs/dvlt@134b21f``) to float32
rounding, including its known failure modes. ``mode="robust"`` (default) avoids them:
outlier-resistant patch summaries instead of point samples, no dependence on sort tie order,
minimal samples with an MSAC score and local refinement, a frame rotated towards the mean ray
direction (cameras facing anywhere), and a decomposition valid for any principal point.

With known (calibrated) ``intrinsics`` only the pose is fitted (robust mode): the camera-frame
bearings ``K⁻¹·[u+0.5, v+0.5, 1]`` of the patch summaries are aligned with the predicted ray
directions by a robust weighted Wahba fit (2-point RANSAC, MSAC, Kabsch refinement), and the
translation is the weighted mean of the inlier patches' origins, as in the other modes.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dvlt_core.geometry.homography import decompose_ql, decompose_qr
from dvlt_core.geometry.ransac import (
    MINIMAL_SAMPLE_SIZE,
    SAMPLE_SIZE,
    UPSTREAM_MIN_INLIERS,
    ransac_robust,
    ransac_rotation,
    ransac_upstream,
)
from dvlt_core.geometry.robust_stats import masked_median

PoseMode = Literal["robust", "upstream"]
_MIN_VIEW_COSINE = 0.1  # robust: ignore rays more than ~84° away from the mean direction


class PoseFit(NamedTuple):
    """Result of :func:`rays_to_pose`.

    Attributes:
        extrinsics_c2w: (B, S, 4, 4) OpenCV camera-to-world ``[R | t]``.
        intrinsics: (B, S, 3, 3) pinhole intrinsics in pixels of the H×W input, pixel-centre
            convention (pixel ``(u, v)`` is centred at ``(u+0.5, v+0.5)``).
        num_inliers: (B, S) int64 patch inliers of the final homography.
        valid: (B, S) bool, False where the fit failed. Upstream mode: fewer than 4 inliers,
            the camera is upstream's identity fallback. Robust mode: fewer than
            ``min_inliers`` inliers, the camera is a least-squares fit to all usable patches
            (or the identity camera if there is none). Cameras are finite either way.
    """

    extrinsics_c2w: Tensor
    intrinsics: Tensor
    num_inliers: Tensor
    valid: Tensor


@dataclass(frozen=True)
class RobustOptions:
    """Settings of the robust estimator (the defaults are what the docs' numbers use).

    Attributes:
        inlier_threshold: inlier distance on the normalised image plane (tangent units, as
            upstream's 0.2).
        num_hypotheses: RANSAC hypotheses per frame.
        refinements: at most this many refits of the winning hypothesis on its inliers.
        min_inliers: fewer inlier patches than this marks the frame invalid.
        seed: seed of the sampling keys (the fit is deterministic for a given seed).
    """

    inlier_threshold: float = 0.2
    num_hypotheses: int = 100
    refinements: int = 3
    min_inliers: int = 8
    seed: int = 42

    def ransac_settings(self) -> dict[str, float | int]:
        """The keyword arguments the RANSAC estimators of :mod:`ransac` take."""
        return {"threshold": self.inlier_threshold, "num_hypotheses": self.num_hypotheses,
                "refinements": self.refinements, "seed": self.seed,
                "min_inliers": self.min_inliers}


def rays_to_pose(
    rays: Tensor,
    weights: Tensor | None = None,
    mode: PoseMode = "robust",
    *,
    patch_size: int = 14,
    options: RobustOptions | None = None,
    intrinsics: Tensor | np.ndarray | None = None,
) -> PoseFit:
    """Fit one pinhole camera per frame to predicted world rays.

    Runs in float32 without autograd or autocast whatever the input dtype. Non-finite rays or
    weights are treated as missing (weight 0) in both modes, where upstream would propagate
    NaN. A frame without enough inliers comes back finite but with ``valid=False`` (see
    :class:`PoseFit`); the identity fallback camera is ``R = I``, ``fx = W/2``, ``fy = H/2``,
    centred principal point.

    Args:
        rays: (B, S, H, W, 6) world rays, channels ``[direction(3) | origin(3)]``.
        weights: (B, S, H, W) non-negative per-pixel confidences, or None for uniform.
        mode: ``"robust"`` or ``"upstream"`` (reproduces upstream to float32 rounding, for parity
            and benchmark reproduction; its candidate order is torch-CPU's on any device).
        patch_size: the rays are reduced to an ``(H // patch_size, W // patch_size)`` grid.
        options: robust-mode settings; not accepted in upstream mode.
        intrinsics: known pinhole intrinsics, (3, 3), (S, 3, 3) or (B, S, 3, 3), in pixels
            of the H×W input with the pixel-centre convention of :class:`PoseFit` (a
            CameraInfo ``K`` mapped to the network canvas, plus 0.5 on ``cx`` and ``cy``).
            Only the rotation and translation are then fitted (robust mode only) and
            ``PoseFit.intrinsics`` is this ``K``. Inlier distances are chords between unit
            bearings (radians for small errors), compared with ``inlier_threshold``.

    Returns:
        :class:`PoseFit`.
    """
    if not isinstance(rays, Tensor) or rays.ndim != 5 or rays.shape[-1] != 6:
        shape = tuple(rays.shape) if isinstance(rays, Tensor) else type(rays).__name__
        raise ValueError(f"rays must be a (B, S, H, W, 6) tensor, got {shape}")
    if weights is not None and weights.shape != rays.shape[:4]:
        raise ValueError(
            f"weights must be (B, S, H, W) = {tuple(rays.shape[:4])}, got {tuple(weights.shape)}"
        )
    if mode not in ("robust", "upstream"):
        raise ValueError(f"mode must be 'robust' or 'upstream', got {mode!r}")
    if mode == "upstream" and options is not None:
        raise ValueError("options only apply to mode='robust'; upstream mode has fixed settings")
    if mode == "upstream" and intrinsics is not None:
        raise ValueError("known intrinsics need mode='robust'; upstream mode always fits K")
    batch, frames, height, width, _ = rays.shape
    known_k = None if intrinsics is None else _known_intrinsics(intrinsics, batch, frames)
    grid_h, grid_w = height // patch_size, width // patch_size
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"a {height}x{width} ray map is smaller than one {patch_size}px patch")
    min_patches = SAMPLE_SIZE if mode == "upstream" else MINIMAL_SAMPLE_SIZE
    if grid_h * grid_w < min_patches:
        raise ValueError(
            f"{mode} mode needs at least {min_patches} patches of {patch_size}px, the "
            f"{height}x{width} map has {grid_h * grid_w}"
            + ("; use mode='robust'" if mode == "upstream" else "")
        )

    # Entering autocast costs more than the rest of the torch part: only leave it if it is on.
    autocast_on = torch.is_autocast_enabled(rays.device.type)
    no_autocast = torch.autocast(rays.device.type, enabled=False) if autocast_on else nullcontext()
    # The numpy part meets non-finite values by design (missing rays, degenerate hypotheses)
    # and handles them explicitly, so its floating-point warnings are noise.
    with (
        torch.no_grad(),
        no_autocast,
        np.errstate(divide="ignore", invalid="ignore", over="ignore"),
    ):
        flat_rays = rays.detach().float().reshape(batch * frames, height, width, 6)
        flat_w = None
        if weights is not None:
            flat_w = weights.detach().float().reshape(flat_rays.shape[:3])
            if bool((flat_w < 0).any()):
                raise ValueError("weights must be non-negative confidences")
        if mode == "upstream":
            fitted = _fit_upstream(flat_rays, flat_w, patch_size)
        elif known_k is not None:
            fitted = _fit_known_intrinsics(
                flat_rays, flat_w, patch_size, options or RobustOptions(), known_k
            )
        else:
            fitted = _fit_robust(flat_rays, flat_w, patch_size, options or RobustOptions())
    extrinsics, intrinsics, count, valid = fitted
    shape = (batch, frames)
    return PoseFit(
        _to_torch(extrinsics.astype(np.float32), rays.device).reshape(*shape, 4, 4),
        _to_torch(intrinsics.astype(np.float32), rays.device).reshape(*shape, 3, 3),
        _to_torch(count.astype(np.int64), rays.device).reshape(shape),
        _to_torch(valid, rays.device).reshape(shape),
    )


def _known_intrinsics(intrinsics: Tensor | np.ndarray, batch: int, frames: int) -> np.ndarray:
    """(B·S, 3, 3) float64 copy of known intrinsics, checked to be finite pinhole matrices."""
    if isinstance(intrinsics, Tensor):
        intrinsics = intrinsics.detach().cpu().double().numpy()
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape[-2:] != (3, 3) or k.ndim > 4:
        raise ValueError(f"intrinsics must be (3, 3), (S, 3, 3) or (B, S, 3, 3), got {k.shape}")
    try:
        k = np.broadcast_to(k, (batch, frames, 3, 3)).reshape(batch * frames, 3, 3).copy()
    except ValueError:
        raise ValueError(
            f"intrinsics {k.shape} do not broadcast to the rays' (B, S) = ({batch}, {frames})"
        ) from None
    if not np.isfinite(k).all():
        raise ValueError("intrinsics contain NaN or inf")
    if (k[:, 0, 0] <= 0).any() or (k[:, 1, 1] <= 0).any():
        raise ValueError("intrinsics must have positive focal lengths fx, fy")
    if not np.allclose(k[:, 2], [0.0, 0.0, 1.0]) or not np.allclose(k[:, 1, 0], 0.0):
        raise ValueError("intrinsics must be upper-triangular pinhole matrices, last row 0 0 1")
    return k


def _to_torch(array: np.ndarray, device: torch.device) -> Tensor:
    tensor = torch.from_numpy(array)
    return tensor if device.type == "cpu" else tensor.to(device)


# The fit itself runs in numpy float64 on patch-level data (see the homography module for why):
# only the reduction of the full-resolution ray maps to the patch grid runs in torch, on the
# input's device, and its (F, N, ...) result is moved to the host once.
_Fit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _fit_upstream(rays: Tensor, weights: Tensor | None, patch_size: int) -> _Fit:
    """Upstream's pipeline on (F, H, W, 6) rays and (F, H, W) weights (None: uniform)."""
    height, width = rays.shape[1:3]
    grid = (height // patch_size, width // patch_size)
    patch_rays = _resample_corners(rays.permute(0, 3, 1, 2), grid).flatten(2).mT  # (F, N, 6)
    patch_rays = patch_rays.cpu().numpy()
    if weights is None:
        patch_w = np.broadcast_to(_resampled_ones(height, width, grid), patch_rays.shape[:2])
    else:
        patch_w = _resample_corners(weights[:, None], grid).flatten(1).cpu().numpy()  # (F, N)
    usable = np.isfinite(patch_rays).all(-1) & np.isfinite(patch_w)
    patch_rays = np.where(usable[..., None], patch_rays, _FILLER_RAY)
    patch_w = np.where(usable, patch_w, np.float32(0))  # float32: upstream's sort tie order

    hom, count = ransac_upstream(
        _upstream_source_grid(grid, height, width), _unit(patch_rays[..., :3]), patch_w
    )
    hom = np.where((np.linalg.det(hom) < 0)[:, None, None], -hom, hom)
    rotation, intrinsics = decompose_ql(hom, height, width)
    origin_sum = (patch_rays[..., 3:] * patch_w[..., None].astype(np.float64)).sum(1)
    translation = origin_sum / (patch_w.sum(-1, keepdims=True, dtype=np.float64) + 1e-8)
    return _assemble(rotation, translation), intrinsics, count, count >= UPSTREAM_MIN_INLIERS


def _fit_robust(
    rays: Tensor, weights: Tensor | None, patch_size: int, options: RobustOptions
) -> _Fit:
    """Robust pipeline on (F, H, W, 6) rays and (F, H, W) weights (None: uniform)."""
    height, width = rays.shape[1:3]
    patch_rays, src, patch_w = _patch_summaries(rays, weights, patch_size)
    dirs = _unit(patch_rays[..., :3])

    # Rotate every frame so that its mean ray direction is +z: the plane z = 1 then holds all
    # rays of any camera orientation, and a homography with H[2, 2] = 1 maps them there.
    pre_rotation = _rotation_to_z((dirs * patch_w[..., None]).sum(1))  # (F, 3, 3)
    dirs = dirs @ pre_rotation.swapaxes(-1, -2)
    usable = (patch_w > 0) & (dirs[..., 2] > _MIN_VIEW_COSINE)
    patch_w = np.where(usable, patch_w, 0.0)
    dst = np.where(usable[..., None], dirs[..., :2] / np.maximum(dirs[..., 2:3], 1e-6), 0.0)

    hom, inliers, valid = ransac_robust(src, dst, patch_w, **options.ransac_settings())
    count = inliers.sum(-1)
    # A failed frame's camera is a least-squares fit to all its usable patches (see
    # ransac_robust), and so is its translation. Finite either way; `valid` flags it.
    inliers = np.where(valid[:, None], inliers, patch_w > 0)
    rotation, intrinsics = decompose_qr(hom, height, width)
    rotation = pre_rotation.swapaxes(-1, -2) @ rotation
    inlier_w = patch_w * inliers
    origin_sum = (patch_rays[..., 3:] * inlier_w[..., None]).sum(1)
    translation = origin_sum / np.maximum(inlier_w.sum(-1, keepdims=True), 1e-12)
    return _assemble(rotation, translation), intrinsics, count, valid


def _fit_known_intrinsics(
    rays: Tensor,
    weights: Tensor | None,
    patch_size: int,
    options: RobustOptions,
    intrinsics: np.ndarray,
) -> _Fit:
    """Rotation and translation for (F, 3, 3) known pixel-centre intrinsics."""
    height, width = rays.shape[1:3]
    patch_rays, src, patch_w = _patch_summaries(rays, weights, patch_size)
    dirs = _unit(patch_rays[..., :3])
    # Normalised image points back to pixel-centre coordinates (u + 0.5, v + 0.5), then
    # through K⁻¹ to camera-frame bearings.
    pixels = (src + 1.0) * np.array([width / 2.0, height / 2.0])
    homogeneous = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=-1)
    bearings = _unit(homogeneous @ np.linalg.inv(intrinsics).swapaxes(-1, -2))
    usable = (patch_w > 0) & (np.square(dirs).sum(-1) > 0.5)
    patch_w = np.where(usable, patch_w, 0.0)

    rotation, inliers, valid = ransac_rotation(bearings, dirs, patch_w, **options.ransac_settings())
    count = inliers.sum(-1)
    inliers = np.where(valid[:, None], inliers, usable)
    inlier_w = patch_w * inliers
    origin_sum = (patch_rays[..., 3:] * inlier_w[..., None]).sum(1)
    translation = origin_sum / np.maximum(inlier_w.sum(-1, keepdims=True), 1e-12)
    return _assemble(rotation, translation), intrinsics, count, valid


_FILLER_RAY = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Float64 unit vectors along the last axis (zero vectors stay zero)."""
    vectors = vectors.astype(np.float64)
    norm = np.sqrt(np.square(vectors).sum(-1, keepdims=True))
    return vectors / np.maximum(norm, 1e-12)


def _resample_corners(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bilinear ``align_corners=True`` resampling of (F, C, H, W) to the patch grid (upstream)."""
    return F.interpolate(x, size=grid, mode="bilinear", align_corners=True)


@functools.lru_cache(maxsize=32)
def _resampled_ones(height: int, width: int, grid: tuple[int, int]) -> np.ndarray:
    """Upstream's patch weights for uniform pixel weights (float32 rounding and all). Read-only.

    The bilinear weights need not sum to exactly 1 in float32, and those last-bit differences
    decide upstream's candidate order, so they are reproduced rather than assumed to be 1.
    """
    ones = _resample_corners(torch.ones(1, 1, height, width), grid).flatten().numpy()
    ones.flags.writeable = False
    return ones


@functools.lru_cache(maxsize=32)
def _upstream_source_grid(grid: tuple[int, int], height: int, width: int) -> np.ndarray:
    """(N, 2) normalised identity-camera points of upstream's align-corners sample positions."""

    def axis(n: int, size: int) -> np.ndarray:
        pixel = np.linspace(0, size - 1, n) if n > 1 else np.array([(size - 1) / 2])
        return (pixel + 0.5) * 2.0 / size - 1.0

    y, x = np.meshgrid(axis(grid[0], height), axis(grid[1], width), indexing="ij")
    points = np.stack([x, y], axis=-1).reshape(-1, 2)
    points.flags.writeable = False
    return points


@functools.lru_cache(maxsize=32)
def _lattice(
    height: int, width: int, patch_size: int, device: torch.device
) -> tuple[Tensor, np.ndarray]:
    """Lattice samples of every patch: flat pixel indices (N·K,) on ``device`` and their
    pixel-centre positions on the normalised image, (N, K, 2) float64 (read-only)."""
    grid_h, grid_w = height // patch_size, width // patch_size
    offsets = np.array(_lattice_offsets(patch_size))
    k = offsets.size
    rows = (np.arange(grid_h)[:, None] * patch_size + offsets)[:, None, :, None]  # (gh,1,k,1)
    cols = (np.arange(grid_w)[:, None] * patch_size + offsets)[None, :, None, :]  # (1,gw,1,k)
    rows, cols = np.broadcast_arrays(rows, cols)  # (gh, gw, k, k)
    flat = (rows * width + cols).reshape(-1)
    centres = np.stack([(cols + 0.5) * 2.0 / width - 1.0, (rows + 0.5) * 2.0 / height - 1.0], -1)
    centres = centres.reshape(grid_h * grid_w, k * k, 2)
    centres.flags.writeable = False
    return torch.from_numpy(flat).to(device), centres


def _patch_summaries(
    rays: Tensor, weights: Tensor | None, patch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outlier-resistant per-patch rays, their image positions, and mean pixel weights.

    Each patch is sampled on a 4×4 pixel lattice. Samples with non-finite rays or a zero (or
    non-finite) weight are missing; of the others, those far from the patch median (more than
    twice the upper median distance) are dropped, and the rest are averaged together with their
    pixel positions. A ray field that is linear in the pixel position (the model's ray
    convention) is thus reproduced exactly at the averaged position, whatever samples are
    missing, and pixel outliers in fewer than half of the samples have no influence.

    Returns:
        ``(rays (F, N, 6), points (F, N, 2) on the normalised 2×2 image, weights (F, N))``,
        float64: the weight is the patch's mean finite pixel weight (1 for ``weights=None``),
        0 if it has no usable sample.
    """
    frames, height, width, _ = rays.shape
    index, centres = _lattice(height, width, patch_size, rays.device)
    num_patches, k = centres.shape[:2]
    samples = rays.reshape(frames, height * width, 6).index_select(1, index)
    samples = samples.cpu().numpy().reshape(frames, num_patches, k, 6)
    samples = np.ascontiguousarray(samples.transpose(0, 1, 3, 2))  # (F, N, 6, K) for the sorts
    finite = np.isfinite(samples)
    if weights is None:
        patch_w = np.ones((frames, num_patches))
        usable = None if finite.all() else finite.all(-2)  # None: every sample is usable
    else:
        pixel_w = torch.where(weights.isfinite(), weights, 0.0)
        patch_w = F.avg_pool2d(pixel_w[:, None], patch_size).reshape(frames, -1)  # floors
        patch_w = patch_w.cpu().numpy().astype(np.float64)
        sampled_w = pixel_w.reshape(frames, height * width).index_select(1, index)
        usable = (sampled_w > 0).cpu().numpy().reshape(frames, num_patches, k)
        usable &= finite.all(-2)
    if usable is not None:
        samples = np.where(usable[:, :, None], samples, np.float32(0))  # no NaN in the sums
    median = masked_median(samples, None if usable is None else usable[:, :, None])  # (F, N, 6)
    diff = samples - median[..., None]  # inf − inf = NaN for patches without usable samples
    dist = np.einsum("fnck,fnck->fnk", diff, diff)  # (F, N, K) squared distances
    keep = dist <= 4 * masked_median(dist, usable, upper=True)[..., None]
    if usable is not None:
        keep &= usable
    keep_w = keep.astype(np.float32)
    count = keep_w.sum(-1)  # (F, N)
    scale = 1.0 / np.maximum(count, 1.0)[..., None]
    # Sums over the kept samples as small matrix products (much cheaper in numpy than a
    # reduction over a short axis).
    mean = (samples @ keep_w[..., None])[..., 0] * scale
    points = (keep_w[..., None, :].astype(np.float64) @ centres)[..., 0, :] * scale
    return mean.astype(np.float64), points, np.where(count > 0, patch_w, 0.0)


def _lattice_offsets(patch_size: int, per_axis: int = 4) -> list[int]:
    """``per_axis`` pixel offsets spread evenly over a patch (all of them for tiny patches)."""
    per_axis = min(per_axis, patch_size)
    return [int((i + 0.5) * patch_size / per_axis) for i in range(per_axis)]


def _rotation_to_z(vectors: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotations taking each (F, 3) vector's direction to +z (identity for zero).

    The shortest rotation taking a unit ``n = (a, b, c)`` to +z is
    ``[[1 − a²k, −abk, −a], [−abk, 1 − b²k, −b], [a, b, c]]`` with ``k = 1/(1 + c)``. It is
    applied after a half-turn about x when ``n`` points backwards, so that ``k`` stays ≤ 1.
    """
    norm = np.sqrt(np.square(vectors).sum(-1, keepdims=True))
    unit = np.where(norm > 1e-12, vectors / np.maximum(norm, 1e-12), [0.0, 0.0, 1.0])
    half_turn = np.array([1.0, -1.0, -1.0])  # diagonal of the half-turn about x
    flip = unit[:, 2] < 0
    a, b, c = np.where(flip[:, None], unit * half_turn, unit).T
    k = 1.0 / (1.0 + c)
    rotation = np.stack(
        [1 - a * a * k, -a * b * k, -a, -a * b * k, 1 - b * b * k, -b, a, b, c], axis=-1
    ).reshape(-1, 3, 3)
    return np.where(flip[:, None, None], rotation * half_turn, rotation)


def _assemble(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(F, 3, 3) and (F, 3) → (F, 4, 4) ``[[R, t], [0, 0, 0, 1]]``."""
    extrinsics = np.zeros((rotation.shape[0], 4, 4))
    extrinsics[:, :3, :3] = rotation
    extrinsics[:, :3, 3] = translation
    extrinsics[:, 3, 3] = 1.0
    return extrinsics
