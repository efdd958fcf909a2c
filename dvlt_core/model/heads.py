"""Output stages of the decoders and the camera head (docs/architecture.md §11-12).

* linear head: per-patch ``Linear(D → o·p²)`` and ``pixel_shuffle(p)``;
* conv head (MoGe-style): three ×2 upsampling stages with UV channels, GroupNorm residual
  units and replicate padding, a bilinear resize to H×W and a small output block;
* camera head: ``LN → Linear → ReLU → Linear → ReLU → fc_pose`` on the camera token, ReLU on
  the two field-of-view channels.

All of them run in float32 with autocast disabled for the tensor's device (see
:func:`float32_region`), on every device type.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONV_STAGE_CHANNELS = (256, 128, 64)
CONV_RESIDUAL_UNITS = 2
CONV_HIDDEN_MULTIPLIER = 2
CONV_LAST_CHANNELS = 32
POSE_DIM = 9


@contextlib.contextmanager
def float32_region(device_type: str) -> Iterator[None]:
    """Disable autocast for ``device_type`` (callers cast their inputs to float32)."""
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def uv_grid(height: int, width: int, aspect_ratio: float) -> Tensor:
    """(2, height, width) float32 [u, v] cell centres of the MoGe view plane.

    The window is ``[-sx, sx] × [-sy, sy]`` with ``sx = a/√(1+a²)``, ``sy = 1/√(1+a²)``.
    The end points are computed in Python floats and spaced with float32 ``torch.linspace``.
    """
    span_x = aspect_ratio / math.sqrt(1 + aspect_ratio**2)
    span_y = 1 / math.sqrt(1 + aspect_ratio**2)
    ex = span_x * (width - 1) / width
    ey = span_y * (height - 1) / height
    u = torch.linspace(-ex, ex, width, dtype=torch.float32)
    v = torch.linspace(-ey, ey, height, dtype=torch.float32)
    return torch.stack([u.expand(height, width), v[:, None].expand(height, width)], dim=0)


class ResidualConvUnit(nn.Module):
    """``x + Conv(ReLU(GN(Conv(ReLU(GN₁(x))))))`` with replicate padding."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        # In-place ReLUs act on fresh GroupNorm outputs: safe, and they keep peak memory low.
        self.layers = nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, hidden, 3, padding=1, padding_mode="replicate"),
            nn.GroupNorm(max(1, hidden // 32), hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 3, padding=1, padding_mode="replicate"),
        )

    def forward(self, x: Tensor) -> Tensor:
        # In place on the fresh conv output (no new buffer); the conv backward does not need it.
        return self.layers(x).add_(x)


def conv_upsample_blocks(in_dim: int) -> nn.ModuleList:
    """``upsample_blocks.<s>``: [ConvTranspose2d ×2 + Conv3×3, residual units] per stage."""
    stages = nn.ModuleList()
    for in_ch, out_ch in zip((in_dim, *CONV_STAGE_CHANNELS[:-1]), CONV_STAGE_CHANNELS, strict=True):
        upsampler = nn.Sequential(
            nn.ConvTranspose2d(in_ch + 2, out_ch, kernel_size=2, stride=2),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, padding_mode="replicate"),
        )
        with torch.no_grad():  # start as nearest-neighbour upsampling: one tap copied 2×2
            weight = upsampler[0].weight
            weight.copy_(weight[:, :, :1, :1].expand_as(weight))
        units = [
            ResidualConvUnit(out_ch, CONV_HIDDEN_MULTIPLIER * out_ch)
            for _ in range(CONV_RESIDUAL_UNITS)
        ]
        stages.append(nn.ModuleList([upsampler, *units]))
    return stages


def conv_output_block(out_dim: int) -> nn.Sequential:
    """``output_block``: Conv3×3 (replicate) → ReLU → Conv1×1 to ``out_dim`` channels."""
    return nn.Sequential(
        nn.Conv2d(
            CONV_STAGE_CHANNELS[-1] + 2, CONV_LAST_CHANNELS, 3, padding=1, padding_mode="replicate"
        ),
        nn.ReLU(inplace=True),
        nn.Conv2d(CONV_LAST_CHANNELS, out_dim, 1),
    )


class CameraHead(nn.Module):
    """Pose encoding ``[t(3), quat xyzw(4), fov_h, fov_w]`` from the decoder camera token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU()
        )
        self.fc_pose = nn.Linear(dim, POSE_DIM)

    def forward(self, token: Tensor) -> Tensor:
        """token (N, D) → (N, 9), computed in float32."""
        with float32_region(token.device.type):
            pose = self.fc_pose(self.mlp(token.float()))
            return torch.cat([pose[:, :7], F.relu(pose[:, 7:])], dim=-1)
