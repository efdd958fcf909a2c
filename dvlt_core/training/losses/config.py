"""Loss configuration: the released recipe (upstream ``DEFAULT_LOSS_CONFIG``) and variants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EdgeClamp = Literal["sum", "mean"]
QuaternionLoss = Literal["raw_l1", "sign_invariant_l1"]


@dataclass(frozen=True)
class PointLossConfig:
    """World-point L2 regression (upstream PointLoss, ``grad_loss=None, disable_conf=True``)."""

    weight: float = 1.0
    enabled: bool = True


@dataclass(frozen=True)
class DepthLossConfig:
    """Depth L1 regression plus a multi-scale edge (gradient-matching) term.

    ``edge_clamp="sum"`` is upstream: the per-view edge sum is clamped at 100 *before* dividing by
    the pixel count, which zeroes its gradient whenever the sum exceeds 100 (typical at 504 px
    early in training). ``"mean"`` clamps the per-pixel mean instead.
    """

    weight: float = 1.0
    enabled: bool = True
    edge_weight: float = 1.0
    edge_scales: int = 4
    edge_synthetic_only: bool = True
    edge_clamp: EdgeClamp = "sum"


@dataclass(frozen=True)
class RayLossConfig:
    """L1 on the 6 ray channels; views with ≤ ``min_valid_pixels`` GT points are skipped.

    ``pixel_mask=False`` is upstream (every pixel counts, which is well defined because GT rays
    depend only on the cameras); ``True`` averages over GT-valid pixels only.
    """

    weight: float = 1.0
    enabled: bool = True
    max_loss: float = 100.0
    min_valid_pixels: int = 100
    pixel_mask: bool = False


@dataclass(frozen=True)
class CameraLossConfig:
    """L1 on the pose encoding ``[t | q | fov]``, weighted 1 (t), 1 (q) and 0.5 (fov) upstream.

    ``quaternion="raw_l1"`` is upstream and penalises ``q`` against ``−q`` although both are the
    same rotation; ``"sign_invariant_l1"`` takes ``min(‖q − g‖₁, ‖q + g‖₁)`` per view.
    """

    weight: float = 1.0
    enabled: bool = True
    translation_weight: float = 1.0
    rotation_weight: float = 1.0
    focal_weight: float = 0.5
    quaternion: QuaternionLoss = "raw_l1"
    min_valid_pixels: int = 100


@dataclass(frozen=True)
class LossConfig:
    """Multi-task loss configuration; the defaults are the released DVLT training recipe.

    ``normalize`` divides predictions by their mean valid point norm and GT by its own (scale-
    invariant supervision). ``detach_pred_scale=False`` is upstream: gradients flow through the
    prediction's scale, as in the usual scale-invariant formulation.
    """

    pmap: PointLossConfig = field(default_factory=PointLossConfig)
    depth: DepthLossConfig = field(default_factory=DepthLossConfig)
    ray: RayLossConfig = field(default_factory=RayLossConfig)
    cam: CameraLossConfig = field(default_factory=CameraLossConfig)
    normalize: bool = True
    detach_pred_scale: bool = False

    @classmethod
    def upstream(cls) -> LossConfig:
        """The released recipe, reproducing upstream ``DVLT.DEFAULT_LOSS_CONFIG`` exactly."""
        return cls()

    @classmethod
    def corrected(cls) -> LossConfig:
        """The released recipe with the two defects fixed: sign-invariant quaternion L1 and the
        edge-loss clamp on the per-pixel mean (so the edge term keeps its gradient)."""
        return cls(
            depth=DepthLossConfig(edge_clamp="mean"),
            cam=CameraLossConfig(quaternion="sign_invariant_l1"),
        )

    @classmethod
    def depth_finetune(cls) -> LossConfig:
        """Stage 2 of the release (depth head fine-tuning): ray and camera losses disabled."""
        return cls(ray=RayLossConfig(enabled=False), cam=CameraLossConfig(enabled=False))
