"""Raw network outputs → evaluable predictions: cameras from rays, unprojected and direct points."""

from __future__ import annotations

import torch
from torch import Tensor

from dvlt_core.eval.protocol import SequencePrediction
from dvlt_core.geometry import rays_to_pose, unproject_depth


def postprocess_raw_predictions(
    rays: Tensor,
    depth: Tensor,
    depth_conf: Tensor | None = None,
    use_depth_conf_for_pose: bool = False,
    pose_mode: str = "upstream",
) -> list[SequencePrediction]:
    """Turn raw outputs into one :class:`SequencePrediction` per batch element.

    Cameras are fitted to the rays (:func:`dvlt_core.geometry.rays_to_pose`, uniform weights
    unless ``use_depth_conf_for_pose``), depth is unprojected through them with the upstream
    integer-pixel convention, and the direct points are ``origin + direction ⊙ depth``.
    Everything runs in float32 without gradients.

    Args:
        rays: (B, S, H, W, 6) raw rays ``[direction | origin]``.
        depth: (B, S, H, W, 1) or (B, S, H, W) raw depth.
        depth_conf: (B, S, H, W) depth confidence; required if ``use_depth_conf_for_pose``.
        use_depth_conf_for_pose: weight the pose fit by ``depth_conf`` instead of uniformly.
        pose_mode: forwarded to ``rays_to_pose`` (``"upstream"`` reproduces the benchmark).
    """
    if rays.ndim != 5 or rays.shape[-1] != 6:
        raise ValueError(f"rays must be (B, S, H, W, 6), got {tuple(rays.shape)}")
    if depth.ndim == 5:
        depth = depth.squeeze(-1)
    if depth.shape != rays.shape[:-1]:
        raise ValueError(f"depth {tuple(depth.shape)} does not match rays {tuple(rays.shape)}")
    if use_depth_conf_for_pose and depth_conf is None:
        raise ValueError("use_depth_conf_for_pose=True needs depth_conf")
    with torch.no_grad():
        rays = rays.detach().float()
        depth = depth.detach().float()
        weights = depth_conf.detach().float() if use_depth_conf_for_pose else torch.ones_like(depth)
        fit = rays_to_pose(rays, weights, mode=pose_mode)
        unprojected = unproject_depth(depth, fit.intrinsics, fit.extrinsics_c2w)
        direct = rays[..., 3:6] + rays[..., 0:3] * depth[..., None]
    return [
        SequencePrediction(
            extrinsics_c2w=fit.extrinsics_c2w[b],
            intrinsics=fit.intrinsics[b],
            depths=depth[b],
            world_points=unprojected[b],
            world_points_direct=direct[b],
        )
        for b in range(rays.shape[0])
    ]
