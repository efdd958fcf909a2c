"""DVLT training losses (upstream-exact by default, with documented corrected modes)."""

from dvlt_core.training.losses.config import (
    CameraLossConfig,
    DepthLossConfig,
    LossConfig,
    PointLossConfig,
    RayLossConfig,
)
from dvlt_core.training.losses.multitask import LossOutput, MultiTaskLoss

__all__ = [
    "CameraLossConfig",
    "DepthLossConfig",
    "LossConfig",
    "LossOutput",
    "MultiTaskLoss",
    "PointLossConfig",
    "RayLossConfig",
]
