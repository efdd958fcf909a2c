"""The DVLT multi-task training loss: point map, depth, rays and camera, scale-normalised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from dvlt_core.geometry import compute_world_rays
from dvlt_core.training.losses.camera import camera_loss
from dvlt_core.training.losses.common import normalization_scale
from dvlt_core.training.losses.config import LossConfig
from dvlt_core.training.losses.depth import depth_loss
from dvlt_core.training.losses.point import point_loss
from dvlt_core.training.losses.ray import ray_loss

# Inputs each term reads (world points and masks are always needed for the normalisation).
_PREDICTION_KEYS = {"pmap": (), "depth": ("depth",), "ray": ("rays",), "cam": ("pose_enc",)}
_BATCH_KEYS = {
    "pmap": (),
    "depth": ("depths",),
    "ray": ("extrinsics_c2w", "intrinsics"),
    "cam": ("extrinsics_c2w", "intrinsics"),
}


@dataclass(frozen=True)
class LossOutput:
    """Result of :class:`MultiTaskLoss`.

    ``total`` is the scalar to back-propagate. ``per_loss[name]`` is the unweighted batch mean of
    each enabled term (upstream's progress-bar ``loss_<name>``); ``components["<name>_<key>"]``
    holds the detached sub-terms (upstream's tracker dict).
    """

    total: Tensor
    per_loss: dict[str, Tensor]
    components: dict[str, Tensor]


def _require(mapping: Mapping[str, Tensor], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if mapping.get(k) is None]
    if missing:
        raise KeyError(f"{what} is missing {missing}; it has {sorted(mapping)}")


class MultiTaskLoss(nn.Module):
    """``Σ_l weight_l · mean_b(loss_l[b])`` over the enabled ``pmap``, ``depth``, ``ray``, ``cam``.

    Predictions (model outputs, upstream key names): ``rays`` (B,S,H,W,6), ``depth`` (B,S,H,W[,1]),
    ``world_points`` (B,S,H,W,3) = rays∘depth, ``pose_enc`` (B,S,9).
    Batch: ``extrinsics_c2w`` (B,S,4,4), ``intrinsics`` (B,S,3,3), ``depths`` (B,S,H,W),
    ``world_points`` (B,S,H,W,3), ``point_masks`` (B,S,H,W) bool, ``is_synthetic`` (B,) or (B,1)
    bool, and optionally ``world_rays`` (B,S,H,W,6), which is computed from the cameras when absent.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def forward(self, predictions: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> LossOutput:
        """Compute every enabled loss term; see the class docstring for the expected keys."""
        cfg = self.config
        enabled = [n for n in ("pmap", "depth", "ray", "cam") if getattr(cfg, n).enabled]
        if not enabled:
            raise ValueError("all loss terms are disabled; enable at least one in LossConfig")
        needed_pred = ["world_points"] + [k for n in enabled for k in _PREDICTION_KEYS[n]]
        needed_batch = ["world_points", "point_masks"]
        needed_batch += [k for n in enabled for k in _BATCH_KEYS[n]]
        _require(predictions, tuple(needed_pred), "predictions")
        _require(batch, tuple(needed_batch), "batch")
        mask = batch["point_masks"].bool()
        if mask.ndim != 4:
            raise ValueError(f"point_masks must be (B, S, H, W), got {tuple(mask.shape)}")

        pred_scale = gt_scale = None
        if cfg.normalize:
            pred_scale = normalization_scale(predictions["world_points"], mask)
            if cfg.detach_pred_scale:
                pred_scale = pred_scale.detach()
            gt_scale = normalization_scale(batch["world_points"], mask)

        terms = {}
        if cfg.pmap.enabled:
            terms["pmap"] = (cfg.pmap.weight, point_loss(
                predictions["world_points"], batch["world_points"], mask, pred_scale, gt_scale
            ))
        if cfg.depth.enabled:
            terms["depth"] = (cfg.depth.weight, depth_loss(
                predictions["depth"], batch["depths"], mask, batch.get("is_synthetic"),
                pred_scale, gt_scale, cfg.depth,
            ))
        if cfg.ray.enabled:
            gt_rays = batch.get("world_rays")
            if gt_rays is None:
                H, W = mask.shape[-2:]
                gt_rays = compute_world_rays(batch["extrinsics_c2w"], batch["intrinsics"], H, W)
            terms["ray"] = (cfg.ray.weight, ray_loss(
                predictions["rays"], gt_rays, mask, pred_scale, gt_scale, cfg.ray
            ))
        if cfg.cam.enabled:
            terms["cam"] = (cfg.cam.weight, camera_loss(
                predictions["pose_enc"], batch["extrinsics_c2w"], batch["intrinsics"], mask,
                pred_scale, gt_scale, cfg.cam,
            ))

        total = None
        per_loss: dict[str, Tensor] = {}
        components: dict[str, Tensor] = {}
        for name, (weight, (per_sample, parts)) in terms.items():
            weighted = (per_sample * weight).mean()
            total = weighted if total is None else total + weighted
            per_loss[name] = per_sample.mean()
            components.update({f"{name}_{key}": value for key, value in parts.items()})
        return LossOutput(total=total, per_loss=per_loss, components=components)
