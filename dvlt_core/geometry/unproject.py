"""Depth unprojection and ground-truth ray maps for pinhole cameras.

Pixel ``(u, v)`` (column, row) covers ``[u, u+1) × [v, v+1)``; its centre is ``(u+0.5, v+0.5)``.
Rays and intrinsics use that pixel-centre convention. Upstream's postprocessed
``world_points`` unproject at the integer corner ``(u, v)`` instead (half a pixel off); that is
``pixel_offset=0.0`` below, the default so that evaluation reproduces the upstream numbers.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

UPSTREAM_PIXEL_OFFSET = 0.0
PIXEL_CENTRE_OFFSET = 0.5


def pixel_grid(
    height: int, width: int, offset: float, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Float32 column and row coordinates ``(u + offset, v + offset)``, each of shape (H, W)."""
    rows = torch.arange(height, dtype=torch.float32, device=device) + offset
    cols = torch.arange(width, dtype=torch.float32, device=device) + offset
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return u, v


def unproject_depth(
    depth: Tensor,
    intrinsics: Tensor,
    extrinsics_c2w: Tensor,
    pixel_offset: float = UPSTREAM_PIXEL_OFFSET,
) -> Tensor:
    """Lift z-depth maps to world points: ``X = R · depth · [(u−cx)/fx, (v−cy)/fy, 1] + t``.

    Args:
        depth: (..., H, W) z-depth (a trailing singleton channel must be squeezed first).
        intrinsics: (..., 3, 3) pinhole intrinsics in pixels of the H×W map.
        extrinsics_c2w: (..., 3|4, 4) OpenCV camera-to-world ``[R | t]``.
        pixel_offset: added to the integer pixel indices. ``0.0`` reproduces upstream's
            ``world_points``; ``0.5`` is the pixel-centre convention of the rays and of the
            intrinsics returned by :func:`~dvlt_core.geometry.rays_to_pose`.

    Returns:
        (..., H, W, 3) float32 world points. Depth ≤ 0 is unprojected as is (no masking).
    """
    if depth.ndim < 2:
        raise ValueError(f"depth must be (..., H, W), got {tuple(depth.shape)}")
    lead = depth.shape[:-2]
    if intrinsics.shape != (*lead, 3, 3):
        raise ValueError(
            f"intrinsics {tuple(intrinsics.shape)} do not match depth {tuple(depth.shape)}: "
            "expected (..., 3, 3) with the depth's leading dims"
        )
    if extrinsics_c2w.shape[:-2] != lead or extrinsics_c2w.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(
            f"extrinsics_c2w {tuple(extrinsics_c2w.shape)} do not match depth "
            f"{tuple(depth.shape)}: expected (..., 3|4, 4) with the depth's leading dims"
        )
    pixel_to_world = _pixel_to_world(extrinsics_c2w, intrinsics)
    directions = _pixel_directions(pixel_to_world, depth.shape[-2], depth.shape[-1], pixel_offset)
    origins = extrinsics_c2w[..., None, None, :3, 3].float()
    scale = depth.float()[..., None]
    if torch.is_grad_enabled() and (scale.requires_grad or directions.requires_grad
                                    or origins.requires_grad):  # out= has no autograd
        return torch.addcmul(origins, directions, scale).contiguous()
    # Batched directions come out channel-planar; write the points row-major in one pass.
    points = torch.empty(directions.shape, dtype=directions.dtype, device=directions.device)
    return torch.addcmul(origins, directions, scale, out=points)


def _pixel_to_world(extrinsics_c2w: Tensor, intrinsics: Tensor) -> Tensor:
    """(..., 3, 3) ``R·K⁻¹`` as one triangular solve (``K`` is upper-triangular)."""
    rotation = extrinsics_c2w[..., :3, :3].float()
    return torch.linalg.solve_triangular(intrinsics.float(), rotation, upper=True, left=False)


@functools.lru_cache(maxsize=16)
def _homogeneous_pixels(height: int, width: int, offset: float, device: torch.device) -> Tensor:
    """(H, W, 3) ``[u + offset, v + offset, 1]``, cached per size (callers must not modify it)."""
    u, v = pixel_grid(height, width, offset, device)
    return torch.stack([u, v, torch.ones_like(u)], dim=-1)


def _pixel_directions(pixel_to_world: Tensor, height: int, width: int, offset: float) -> Tensor:
    """(..., H, W, 3) ``A·[u + offset, v + offset, 1]ᵀ`` for (..., 3, 3) matrices ``A``."""
    pix = _homogeneous_pixels(height, width, offset, pixel_to_world.device)
    return torch.einsum("...ij,hwj->...hwi", pixel_to_world, pix)


def compute_world_rays(
    extrinsics_c2w: Tensor, intrinsics: Tensor, height: int, width: int
) -> Tensor:
    """Ground-truth ray maps: direction ``R·K⁻¹·[u+0.5, v+0.5, 1]ᵀ`` and origin ``t`` per pixel.

    The direction is not normalised: its camera-frame z is 1, so
    ``origin + z_depth · direction`` is the world point.

    Args:
        extrinsics_c2w: (..., 3|4, 4) camera-to-world.
        intrinsics: (..., 3, 3) pinhole intrinsics in pixels.
        height, width: size of the ray map.

    Returns:
        (..., H, W, 6) float32 rays ``[direction | origin]``.
    """
    if intrinsics.shape[-2:] != (3, 3) or extrinsics_c2w.shape[:-2] != intrinsics.shape[:-2]:
        raise ValueError(
            f"expected extrinsics (..., 3|4, 4) and intrinsics (..., 3, 3) with the same leading "
            f"dims, got {tuple(extrinsics_c2w.shape)} and {tuple(intrinsics.shape)}"
        )
    pixel_to_world = _pixel_to_world(extrinsics_c2w, intrinsics)
    directions = _pixel_directions(pixel_to_world, height, width, PIXEL_CENTRE_OFFSET)
    origins = extrinsics_c2w[..., None, None, :3, 3].float().expand_as(directions)
    return torch.cat([directions, origins], dim=-1)
