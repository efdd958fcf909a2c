"""Multi-head self-attention and the small layers shared by every transformer block.

Attention (docs/architecture.md §8): one qkv Linear split as (3, heads, head_dim), optional
per-head qk LayerNorm (eps 1e-5, shared across heads), optional 2-D RoPE on q and k, then
``torch.nn.functional.scaled_dot_product_attention`` (scale 1/sqrt(head_dim), no mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvlt_core.model.rope import apply_rope

RopeTables = tuple[Tensor, Tensor]


class Attention(nn.Module):
    """qkv → (qk-norm) → (RoPE) → SDPA → proj. Submodule names follow the checkpoint."""

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: RopeTables | None = None) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    """Per-channel residual-branch scale ``gamma``."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def add_to(self, x: Tensor, branch: Tensor, gate: Tensor | None = None) -> Tensor:
        """``x + gate ⊙ γ ⊙ branch`` in one pass over the tokens (``gate``: (N, 1, C) or None).

        The per-channel factors are multiplied first, on C (or N·C) values instead of every
        token; the result differs from ``x + gate ⊙ (γ ⊙ branch)`` by rounding only.
        """
        scale = self.gamma if gate is None else gate * self.gamma
        return torch.addcmul(x, branch, scale)


class Mlp(nn.Module):
    """fc1 → exact (erf) GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block ``x + ls1(attn(norm1 x))``, ``x + ls2(mlp(norm2 x))``.

    Used by the DINOv2 backbone (LayerScale, eps 1e-6, no qk-norm) and by the decoders
    (no LayerScale unless ``decoder_init_values`` is set, eps 1e-5, qk-norm + RoPE).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        eps: float,
        qk_norm: bool,
        layerscale_init: float | None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else None
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else None

    def forward(self, x: Tensor, rope: RopeTables | None = None) -> Tensor:
        branch = self.attn(self.norm1(x), rope)
        x = self.ls1.add_to(x, branch) if self.ls1 is not None else x + branch
        branch = self.mlp(self.norm2(x))
        return self.ls2.add_to(x, branch) if self.ls2 is not None else x + branch
