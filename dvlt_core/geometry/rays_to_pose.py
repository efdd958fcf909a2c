"""Camera poses and intrinsics from per-pixel world rays (the DVLT postprocessing step).

The rays are reduced to the patch grid, a homography from an identity camera to the ray
directions is estimated with RANSAC and split into the camera-to-world rotation and the
intrinsics; the translation is a weighted mean of the ray origins.

``mode="upstream"`` reproduces upstream ``rays_to_pose`` (``nv-tlabs/dvlt@134b21f``) to float32
rounding, including its known failure modes. ``mode="robust"`` (default) avoids them:
outlier-resistant patch summaries instead of point samples, no dependence on sort tie order,
minimal samples with an MSAC score and local refinement, a frame rotated towards the mean ray
direction (cameras facing anywhere), and a decomposition valid for any principal point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dvlt_core.geometry.homography import decompose_ql, decompose_qr, fit_homography
from dvlt_core.geometry.ransac import (
    MINIMAL_SAMPLE_SIZE,
    SAMPLE_SIZE,
    UPSTREAM_MIN_INLIERS,
    ransac_robust,
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


def rays_to_pose(
    rays: Tensor,
    weights: Tensor | None = None,
    mode: PoseMode = "robust",
    *,
    patch_size: int = 14,
    options: RobustOptions | None = None,
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
    batch, frames, height, width, _ = rays.shape
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

    with torch.no_grad(), torch.autocast(rays.device.type, enabled=False):
        flat_rays = rays.detach().float().reshape(batch * frames, height, width, 6)
        if weights is None:
            flat_w = torch.ones(flat_rays.shape[:3], device=rays.device)
        else:
            flat_w = weights.detach().float().reshape(flat_rays.shape[:3])
            if bool((flat_w < 0).any()):
                raise ValueError("weights must be non-negative confidences")
        if mode == "upstream":
            fitted = _fit_upstream(flat_rays, flat_w, patch_size)
        else:
            fitted = _fit_robust(flat_rays, flat_w, patch_size, options or RobustOptions())
        extrinsics, intrinsics, count, valid = fitted
    shape = (batch, frames)
    return PoseFit(
        extrinsics.reshape(*shape, 4, 4),
        intrinsics.reshape(*shape, 3, 3),
        count.reshape(shape),
        valid.reshape(shape),
    )


def _fit_upstream(
    rays: Tensor, weights: Tensor, patch_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Upstream's pipeline on (F, H, W, 6) rays and (F, H, W) weights."""
    height, width = rays.shape[1:3]
    grid = (height // patch_size, width // patch_size)
    patch_rays = _resample_corners(rays.permute(0, 3, 1, 2), grid).flatten(2).mT  # (F, N, 6)
    patch_w = _resample_corners(weights[:, None], grid).flatten(1)  # (F, N)
    usable = patch_rays.isfinite().all(-1) & patch_w.isfinite()
    filler = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], device=rays.device)
    patch_rays = torch.where(usable[..., None], patch_rays, filler)
    patch_w = torch.where(usable, patch_w, 0.0)

    dirs = F.normalize(patch_rays[..., :3], dim=-1)
    hom, count = ransac_upstream(
        _upstream_source_grid(grid, height, width, rays.device), dirs, patch_w
    )
    hom = torch.where((torch.linalg.det(hom) < 0)[:, None, None], -hom, hom)
    rotation, intrinsics = decompose_ql(hom, height, width)
    origin_sum = (patch_rays[..., 3:] * patch_w[..., None]).sum(1)
    translation = origin_sum / (patch_w.sum(-1, keepdim=True) + 1e-8)
    return _assemble(rotation, translation), intrinsics, count, count >= UPSTREAM_MIN_INLIERS


def _fit_robust(
    rays: Tensor, weights: Tensor, patch_size: int, options: RobustOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Robust pipeline on (F, H, W, 6) rays and (F, H, W) weights."""
    height, width = rays.shape[1:3]
    patch_rays, src, patch_w = _patch_summaries(rays, weights, patch_size)
    dirs = F.normalize(patch_rays[..., :3], dim=-1)

    # Rotate every frame so that its mean ray direction is +z: the plane z = 1 then holds all
    # rays of any camera orientation, and a homography with H[2, 2] = 1 maps them there.
    mean_dir = (dirs * patch_w[..., None]).sum(1)
    pre_rotation = _rotation_to_z(mean_dir)  # (F, 3, 3)
    dirs = dirs @ pre_rotation.mT
    usable = (patch_w > 0) & (dirs[..., 2] > _MIN_VIEW_COSINE)
    patch_w = torch.where(usable, patch_w, 0.0)
    dst = torch.where(usable[..., None], dirs[..., :2] / dirs[..., 2:3].clamp_min(1e-6), 0.0)

    hom, inliers = ransac_robust(
        src,
        dst,
        patch_w,
        threshold=options.inlier_threshold,
        num_hypotheses=options.num_hypotheses,
        refinements=options.refinements,
        seed=options.seed,
    )
    count = inliers.sum(-1)
    valid = (count >= options.min_inliers) & hom.flatten(1).isfinite().all(-1)
    if not bool(valid.all()):
        # Best effort for failed frames: a least-squares fit to every usable patch, else the
        # identity camera. Finite either way; `valid` tells the caller not to trust it.
        inliers = torch.where(valid[:, None], inliers, patch_w > 0)
        hom = torch.where(
            valid[:, None, None], hom, fit_homography(src.expand_as(dst), dst, patch_w)
        )
        finite = hom.flatten(1).isfinite().all(-1)
        hom = torch.where(finite[:, None, None], hom, torch.eye(3, device=hom.device))

    rotation, intrinsics = decompose_qr(hom, height, width)
    rotation = pre_rotation.mT @ rotation
    inlier_w = patch_w * inliers
    origin_sum = (patch_rays[..., 3:] * inlier_w[..., None]).sum(1)
    translation = origin_sum / inlier_w.sum(-1, keepdim=True).clamp_min(1e-12)
    return _assemble(rotation, translation), intrinsics, count, valid


def _resample_corners(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bilinear ``align_corners=True`` resampling of (F, C, H, W) to the patch grid (upstream)."""
    return F.interpolate(x, size=grid, mode="bilinear", align_corners=True)


def _upstream_source_grid(
    grid: tuple[int, int], height: int, width: int, device: torch.device
) -> Tensor:
    """(N, 2) normalised identity-camera points of upstream's align-corners sample positions."""

    def axis(n: int, size: int) -> Tensor:
        if n > 1:
            pixel = torch.linspace(0, size - 1, n, dtype=torch.float32, device=device)
        else:
            pixel = torch.tensor([(size - 1) / 2], dtype=torch.float32, device=device)
        return (pixel + 0.5) * 2.0 / size - 1.0

    y, x = torch.meshgrid(axis(grid[0], height), axis(grid[1], width), indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def _patch_summaries(
    rays: Tensor, weights: Tensor, patch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Outlier-resistant per-patch rays, their image positions, and mean pixel weights.

    Each patch is sampled on a 4×4 pixel lattice. Samples with non-finite rays or a zero (or
    non-finite) weight are missing; of the others, those far from the patch median (more than
    twice the upper median distance) are dropped, and the rest are averaged together with their
    pixel positions. A ray field that is linear in the pixel position (the model's ray
    convention) is thus reproduced exactly at the averaged position, whatever samples are
    missing, and pixel outliers in fewer than half of the samples have no influence.

    Returns:
        ``(rays (F, N, 6), points (F, N, 2) on the normalised 2×2 image, weights (F, N))``: the
        weight is the patch's mean finite pixel weight, 0 if it has no usable sample.
    """
    frames, height, width, _ = rays.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    rays = rays[:, : grid_h * patch_size, : grid_w * patch_size]
    weights = weights[:, : grid_h * patch_size, : grid_w * patch_size]
    pixel_w = torch.where(weights.isfinite(), weights, 0.0)
    patch_w = F.avg_pool2d(pixel_w[:, None], patch_size).flatten(1)

    offsets = torch.tensor(_lattice_offsets(patch_size), device=rays.device)

    def lattice(x: Tensor) -> Tensor:
        """(F, H', W', C) → (F, N, C, K): the K lattice samples of every patch."""
        x = x.reshape(frames, grid_h, patch_size, grid_w, patch_size, -1)
        x = x.index_select(2, offsets).index_select(4, offsets).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(frames, grid_h * grid_w, x.shape[3], -1)

    samples = lattice(rays)  # (F, N, 6, K)
    # Only the samples' rays need to be finite: NaN and ±inf propagate through the sum.
    usable = lattice((pixel_w > 0)[..., None])[:, :, 0] & samples.sum(-2).isfinite()  # (F, N, K)
    median = masked_median(samples, usable[:, :, None])  # (F, N, 6)
    dist = (samples - median[..., None]).square().sum(-2)  # (F, N, K)
    keep = usable & (dist <= 4 * masked_median(dist, usable, upper=True)[..., None])
    keep_w = keep.float()
    count = keep_w.sum(-1)
    mean = torch.where(keep[:, :, None], samples, 0.0).sum(-1) / count[..., None].clamp_min(1)

    # Pixel centres of the lattice samples on the normalised image, averaged over kept samples.
    centre = offsets.float() + 0.5
    k = offsets.numel()
    row = torch.arange(grid_h, device=rays.device)[:, None] * patch_size + centre  # (gh, k)
    col = torch.arange(grid_w, device=rays.device)[:, None] * patch_size + centre  # (gw, k)
    u = col[None, :, None, :].expand(grid_h, grid_w, k, k).reshape(-1, k * k)
    v = row[:, None, :, None].expand(grid_h, grid_w, k, k).reshape(-1, k * k)
    uv = torch.stack([(keep_w * u).sum(-1), (keep_w * v).sum(-1)], dim=-1) / count[
        ..., None
    ].clamp_min(1)
    points = uv * torch.tensor([2.0 / width, 2.0 / height], device=rays.device) - 1.0
    return mean, points, torch.where(count > 0, patch_w, 0.0)


def _lattice_offsets(patch_size: int, per_axis: int = 4) -> list[int]:
    """``per_axis`` pixel offsets spread evenly over a patch (all of them for tiny patches)."""
    per_axis = min(per_axis, patch_size)
    return [int((i + 0.5) * patch_size / per_axis) for i in range(per_axis)]


def _rotation_to_z(vectors: Tensor) -> Tensor:
    """(F, 3, 3) rotations taking each (F, 3) vector's direction to +z (identity for zero).

    Rodrigues' formula for the shortest rotation, applied after a half-turn about x when the
    vector points backwards, so the formula never meets its singularity at −z.
    """
    norm = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    z_axis = torch.tensor([0.0, 0.0, 1.0], device=vectors.device)
    unit = torch.where(norm > 1e-12, vectors / norm.clamp_min(1e-12), z_axis)
    flip = unit[:, 2] < 0
    half_turn = torch.diag(torch.tensor([1.0, -1.0, -1.0], device=vectors.device))
    unit = torch.where(flip[:, None], unit @ half_turn, unit)
    axis = torch.linalg.cross(unit, z_axis.expand_as(unit))  # sin(θ)·k
    cos = unit[:, 2]
    zeros = torch.zeros_like(cos)
    skew = torch.stack(
        [
            torch.stack([zeros, -axis[:, 2], axis[:, 1]], -1),
            torch.stack([axis[:, 2], zeros, -axis[:, 0]], -1),
            torch.stack([-axis[:, 1], axis[:, 0], zeros], -1),
        ],
        dim=-2,
    )
    eye = torch.eye(3, device=vectors.device)
    rotation = eye + skew + skew @ skew / (1 + cos)[:, None, None]
    return torch.where(flip[:, None, None], rotation @ half_turn, rotation)


def _assemble(rotation: Tensor, translation: Tensor) -> Tensor:
    """(F, 3, 3) and (F, 3) → (F, 4, 4) ``[[R, t], [0, 0, 0, 1]]``."""
    extrinsics = torch.eye(4, device=rotation.device).repeat(rotation.shape[0], 1, 1)
    extrinsics[:, :3, :3] = rotation
    extrinsics[:, :3, 3] = translation
    return extrinsics
