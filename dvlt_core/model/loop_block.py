"""The looped block: a frame sub-block then a global sub-block (docs/architecture.md §8).

Each sub-block is pre-norm attention + MLP with LayerScale, scaled by the step's gates::

    y   = x + s_attn ⊙ γ1 ⊙ Attn(LN1(x))
    z   = y + s_mlp  ⊙ γ2 ⊙ MLP(LN2(y))
    out = s_out ⊙ z            (gated mode only)

Frame attention runs per view (B·S, P, C) with RoPE; global attention runs over all tokens of
all views of a batch element (B, S·P, C) without RoPE. Each has its own gate MLP.
In training mode each gated branch goes through per-sample drop-path (stochastic depth over
the sub-block's leading axis, upstream's ``drop_path``, 0.1 for the release); in eval mode
and in exported graphs it is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dvlt_core.model.attention import Attention, LayerScale, Mlp, RopeTables
from dvlt_core.model.gates import DepthScaling

TRUNK_LAYERSCALE_INIT = 0.01


class DropPath(nn.Module):
    """Zero a residual branch for a random subset of samples (leading axis) in training,
    rescaling the kept ones by ``1 / (1 - p)``; the identity in eval mode."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        mask.bernoulli_(keep)
        return x * (mask / keep if keep > 0.0 else mask)


class GatedBlock(nn.Module):
    """One depth-scaled sub-block; ``gate_mode`` is ``gated``, ``no_sout`` or ``none``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        gate_mode: str,
        time_conditioning: str,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        self.ls1 = LayerScale(dim, TRUNK_LAYERSCALE_INIT)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, TRUNK_LAYERSCALE_INIT)
        self.drop1 = DropPath(drop_path)
        self.drop2 = DropPath(drop_path)
        self.num_gates = {"gated": 3, "no_sout": 2}.get(gate_mode, 0)
        self.depth_scale = (
            DepthScaling(dim, self.num_gates, time_conditioning) if self.num_gates else None
        )

    def forward(
        self, x: Tensor, t_now: Tensor, t_next: Tensor, rope: RopeTables | None = None
    ) -> Tensor:
        attn = self.drop1(self.attn(self.norm1(x), rope))
        if self.depth_scale is None:
            x = self.ls1.add_to(x, attn)
            return self.ls2.add_to(x, self.drop2(self.mlp(self.norm2(x))))
        gates = self.depth_scale(t_now, t_next, x.shape[0]).unsqueeze(1)  # (N, 1, G·C)
        s = gates.chunk(self.num_gates, dim=-1)
        x = self.ls1.add_to(x, attn, s[0])
        x = self.ls2.add_to(x, self.drop2(self.mlp(self.norm2(x))), s[1])
        if self.num_gates == 3:
            x = s[2] * x
        return x


class LoopBlock(nn.Module):
    """``frame_attn`` (per view, RoPE) then ``global_attn`` (all views of a batch element)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        gate_mode: str,
        time_conditioning: str,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        args = (dim, num_heads, mlp_ratio, gate_mode, time_conditioning, drop_path)
        self.frame_attn = GatedBlock(*args)
        self.global_attn = GatedBlock(*args)

    def forward(self, x: Tensor, t_now: Tensor, t_next: Tensor, rope: RopeTables) -> Tensor:
        """x (B, S, P, C) → (B, S, P, C)."""
        B, S, P, C = x.shape
        x = self.frame_attn(x.reshape(B * S, P, C), t_now, t_next, rope)
        x = self.global_attn(x.reshape(B, S * P, C), t_now, t_next)
        return x.reshape(B, S, P, C)
