"""REFERENCE ONLY, for benchmarks: the model as it was before the CPU speed work (issue 15).

``bench_model.py`` compares against this when no upstream checkout is given. It is today's
``DVLTModel`` with the previous ``forward`` of the few modules the speed work changed bound onto
its instances (the previous code ran the same kernels as upstream; see docs/model.md,
"Benchmark"). Nothing outside ``benchmarks/`` may import it.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor

from dvlt_core.model import DVLTModel
from dvlt_core.model.attention import Attention, TransformerBlock
from dvlt_core.model.decoders import Decoder
from dvlt_core.model.heads import ResidualConvUnit, uv_grid
from dvlt_core.model.loop_block import GatedBlock


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    d = x.shape[-1]
    swapped = x.unflatten(-1, (2, 2, d // 4)).flip(-2).flatten(-3)
    return x * cos + swapped * sin


def _attention(self, x: Tensor, rope=None) -> Tensor:
    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    if self.q_norm is not None:
        q, k = self.q_norm(q), self.k_norm(k)
    if rope is not None:
        cos, sin = rope
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
    x = F.scaled_dot_product_attention(q, k, v)
    return self.proj(x.transpose(1, 2).reshape(B, N, C))


def _transformer_block(self, x: Tensor, rope=None) -> Tensor:
    branch = self.attn(self.norm1(x), rope)
    x = x + (branch * self.ls1.gamma if self.ls1 is not None else branch)
    branch = self.mlp(self.norm2(x))
    return x + (branch * self.ls2.gamma if self.ls2 is not None else branch)


def _gated_block(self, x: Tensor, t_now: Tensor, t_next: Tensor, rope=None) -> Tensor:
    branch = self.attn(self.norm1(x), rope) * self.ls1.gamma
    if self.depth_scale is None:
        x = x + branch
        return x + self.mlp(self.norm2(x)) * self.ls2.gamma
    s = self.depth_scale(t_now, t_next, x.shape[0]).unsqueeze(1).chunk(self.num_gates, dim=-1)
    x = x + s[0] * branch
    x = x + s[1] * (self.mlp(self.norm2(x)) * self.ls2.gamma)
    return s[2] * x if self.num_gates == 3 else x


def _residual_conv_unit(self, x: Tensor) -> Tensor:
    return x + self.layers(x)


def _with_uv(decoder: Decoder, x: Tensor, image_hw: tuple[int, int]) -> Tensor:
    (H, W), (h, w) = image_hw, x.shape[-2:]
    key = ("reference", h, w, H, W, x.device)
    uv = decoder._uv_cache.get(key, lambda: uv_grid(h, w, W / H).to(x.device))
    return torch.cat([x, uv.unsqueeze(0).expand(x.shape[0], -1, -1, -1)], dim=1)


def _conv_stage(self, x: Tensor, image_hw: tuple[int, int]) -> Tensor:
    H, W = image_hw
    p = self.patch_size
    x = x.transpose(1, 2).reshape(x.shape[0], -1, H // p, W // p)
    for stage in self.upsample_blocks:
        x = _with_uv(self, x, image_hw)
        for layer in stage:
            x = layer(x)
    x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    x = _with_uv(self, x, image_hw)
    return self.output_block(x)


_PREVIOUS = {
    Attention: ("forward", _attention),
    TransformerBlock: ("forward", _transformer_block),
    GatedBlock: ("forward", _gated_block),
    ResidualConvUnit: ("forward", _residual_conv_unit),
    Decoder: ("_conv_stage", _conv_stage),
}


def reference_model(**config) -> DVLTModel:
    """A ``DVLTModel`` (same state dict) that runs the previous implementation."""
    model = DVLTModel(**config)
    for module in model.modules():
        if type(module) in _PREVIOUS:
            name, method = _PREVIOUS[type(module)]
            setattr(module, name, types.MethodType(method, module))
        for param in module.parameters(recurse=False):
            if param.dim() == 4:  # the previous conv weights were contiguous (NCHW)
                param.data = param.data.contiguous()
    return model
