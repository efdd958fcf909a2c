"""DINOv2 ViT/14 backbone with registers, as DVLT uses it (docs/architecture.md §5).

Built from scratch (no download): the checkpoint supplies the weights. Differences from the
original DINOv2 that DVLT relies on: the final norm is an affine-free LayerNorm (eps 1e-5), so
there are no ``norm.weight/bias`` keys; ``pos_embed`` always covers the 518 px grid and is
resampled with antialiased bicubic interpolation (explicit output size) for any other grid;
``mask_token`` exists but is unused; the giant variant uses a plain GELU MLP like upstream.
Only the patch tokens of the normalised output are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvlt_core.model.attention import TransformerBlock
from dvlt_core.model.cache import ConstantCache, to_device

POS_EMBED_IMG_SIZE = 518


@dataclass(frozen=True)
class BackboneSpec:
    embed_dim: int
    depth: int
    num_heads: int


# Upstream names (``dinov2_vitg2_reg`` is upstream's spelling of the giant); ``dinov2_vitg14_reg``
# is accepted as an alias with the same architecture.
BACKBONE_SPECS: dict[str, BackboneSpec] = {
    "dinov2_vits14_reg": BackboneSpec(384, 12, 6),
    "dinov2_vitb14_reg": BackboneSpec(768, 12, 12),
    "dinov2_vitl14_reg": BackboneSpec(1024, 24, 16),
    "dinov2_vitg2_reg": BackboneSpec(1536, 40, 24),
    "dinov2_vitg14_reg": BackboneSpec(1536, 40, 24),
}


class PatchEmbed(nn.Module):
    """Non-overlapping p×p convolution, flattened row-major to (N, h·w, C)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def _bicubic_kernel(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys cubic kernel with a = -0.5 (the antialiased/PIL filter)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_aa_matrix(src: int, dst: int) -> Tensor:
    """(dst, src) float32 weights of 1-D antialiased bicubic resampling, align_corners=False.

    The filter of ``F.interpolate(mode="bicubic", antialias=True)``: PIL-style kernel
    (a = -0.5) stretched by the scale when shrinking, taps in ``[center ± support)``, weights
    renormalised per output. Scale and tap centres are rounded to float32 as torch does; the
    rest is float64, so each weight is within 3e-7 of torch's. NumPy is used so that no torch
    op is recorded when a stage is traced for export. Two matrices resample a grid as
    ``A_h · P · A_wᵀ``.
    """
    scale = float(np.float32(src) / np.float32(dst))
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((dst, src), dtype=np.float64)
    for i in range(dst):
        center = float(np.float32(scale * (i + 0.5)))
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), src)
        taps = _bicubic_kernel((np.arange(lo, hi) - center + 0.5) * inv_scale)
        total = taps.sum()
        weights[i, lo:hi] = taps / total if total != 0 else taps
    return torch.from_numpy(weights.astype(np.float32))


class DinoV2Backbone(nn.Module):
    """ViT/14 with ``num_register_tokens`` registers; returns normalised patch tokens."""

    def __init__(self, spec: BackboneSpec, patch_size: int, num_register_tokens: int) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.patch_size = patch_size
        self.pos_grid = POS_EMBED_IMG_SIZE // patch_size
        self.num_register_tokens = num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid**2, dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, spec.num_heads, 4.0, eps=1e-6, qk_norm=False, layerscale_init=1.0)
            for _ in range(spec.depth)
        )
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self._resample_cache = ConstantCache()
        self._init_weights()

    def _init_weights(self) -> None:
        """DINOv2's initialisation (timm ViT), used only when training from scratch."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def positional_embedding(self, grid_h: int, grid_w: int) -> Tensor:
        """(1, 1 + h·w, C): the cls slot, then the 37×37 table resampled to h×w.

        Eager execution uses ``F.interpolate`` (bit-identical to upstream). When tracing for
        export, the same filter is applied as two matrix products, because ONNX opset 17 has no
        antialiased bicubic resize; the two paths agree to ~1e-7.
        """
        M = self.pos_grid
        table = self.pos_embed.float()
        if (grid_h, grid_w) == (M, M):
            return table
        grid = table[:, 1:].reshape(1, M, M, -1)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            patches = self._resample_with_matrices(grid[0], grid_h, grid_w)
        else:
            patches = F.interpolate(
                grid.permute(0, 3, 1, 2),
                size=(grid_h, grid_w),
                mode="bicubic",
                antialias=True,
                align_corners=False,
            ).permute(0, 2, 3, 1)
        return torch.cat([table[:, :1], patches.reshape(1, grid_h * grid_w, -1)], dim=1)

    def _resample_with_matrices(self, grid: Tensor, grid_h: int, grid_w: int) -> Tensor:
        M = self.pos_grid
        a_h, a_w = self._resample_cache.get(
            (grid_h, grid_w, grid.device),
            lambda: to_device(
                (bicubic_aa_matrix(M, grid_h), bicubic_aa_matrix(M, grid_w)), grid.device
            ),
        )
        rows = torch.einsum("hm,mnc->hnc", a_h, grid)
        return torch.einsum("wn,hnc->hwc", a_w, rows)

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W), already normalised → patch tokens (N, h·w, C)."""
        n, _, H, W = images.shape
        grid_h, grid_w = int(H) // self.patch_size, int(W) // self.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = x + self.positional_embedding(grid_h, grid_w).to(x.dtype)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
