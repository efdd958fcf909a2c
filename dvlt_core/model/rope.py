"""2-D rotary position embedding (docs/architecture.md §7), with tables precomputed per patch grid.

Each head of size ``d`` is split into a y half and an x half of ``d/2`` channels. Inside a half,
channel ``k`` is paired with channel ``k + d/4`` ("rotate-half"), rotated by ``pos·f_k`` with
``f_k = 100^(-2k/(d/2))``. Patch (r, c) has position (r + 1, c + 1); the special tokens in front
have (0, 0) and are left unrotated.

The tables are full-sequence ``cos`` and signed ``sin`` rows of width ``d`` so applying RoPE is
``q·cos + swap(q)·sin``: two multiplies and an add, no gather, no data-dependent shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dvlt_core.model.cache import ConstantCache, to_device

ROPE_BASE = 100.0


def rope_positions(grid_h: int, grid_w: int, num_special: int) -> Tensor:
    """(P, 2) int64 (y, x) positions: zeros for the special tokens, then (r+1, c+1) row-major."""
    rows = torch.arange(grid_h).repeat_interleave(grid_w)
    cols = torch.arange(grid_w).repeat(grid_h)
    patches = torch.stack([rows, cols], dim=-1) + 1
    return torch.cat([torch.zeros(num_special, 2, dtype=torch.long), patches], dim=0)


def rope_tables(grid_h: int, grid_w: int, num_special: int, head_dim: int) -> tuple[Tensor, Tensor]:
    """float32 ``(cos, signed_sin)`` tables of shape (P, head_dim) for one patch grid."""
    half = head_dim // 2
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, half, 2).float() / half))
    pos = rope_positions(grid_h, grid_w, num_special).float()
    # (P, 2, half/2): angle of every (token, axis, frequency); float32 like upstream.
    angles = pos[:, :, None] * inv_freq[None, None, :]
    cos = angles.cos()
    sin = angles.sin()
    # Rotate-half inside each axis half: out = u·cos + [-u_hi, u_lo]·sin = u·cos + swap(u)·ssin.
    cos_table = torch.cat([cos, cos], dim=-1).reshape(-1, head_dim)
    sin_table = torch.cat([-sin, sin], dim=-1).reshape(-1, head_dim)
    return cos_table.contiguous(), sin_table.contiguous()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (..., P, d) with tables (P, d) from :func:`rope_tables`.

    ``x·cos + swap(x)·sin``. Eagerly, ``swap(x)·sin`` is added in place, quarter by quarter,
    to the fresh ``x·cos``: the same two roundings per element as one ``addcmul`` on the
    swapped copy (bit-identical), without making that copy. A traced graph (ONNX export)
    takes the copy, because in-place updates of views do not export.
    """
    d = x.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    quarters = (2, 2, d // 4)  # (axis half, lo/hi quarter, channel)
    x_q = x.unflatten(-1, quarters)
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return torch.addcmul(x * cos, x_q.flip(-2).flatten(-3), sin)
    out = x * cos
    out_q, sin_q = out.unflatten(-1, quarters), sin.unflatten(-1, quarters)
    out_q[..., 0, :].addcmul_(x_q[..., 1, :], sin_q[..., 0, :])
    out_q[..., 1, :].addcmul_(x_q[..., 0, :], sin_q[..., 1, :])
    return out


class RopeCache:
    """Per-(grid, head size, device) cache of float32 RoPE tables (not module state)."""

    def __init__(self, num_special: int) -> None:
        self.num_special = num_special
        self._tables = ConstantCache()

    def get(
        self, grid_h: int, grid_w: int, head_dim: int, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        return self._tables.get(
            (grid_h, grid_w, head_dim, device),
            lambda: to_device(rope_tables(grid_h, grid_w, self.num_special, head_dim), device),
        )
