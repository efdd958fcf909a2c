"""Ray and depth decoders: transformer front-end + linear or conv output stage
(docs/architecture.md §11).

Front-end: ``proj_in`` (C → D) on all P tokens, ``depth`` pre-norm blocks with qk-norm and the
trunk's RoPE positions, kept as ``features`` (the camera head reads token 0 of the ray
decoder's), then ``norm`` and the first ``num_special`` tokens dropped. The output stage maps
the patch tokens to a channel-first (N, o, H, W) map in float32. The conv stage runs in
channels-last layout (the token grid already is one, and oneDNN's convolutions are faster on it),
so its output is an (N, o, H, W) view of (N, H, W, o) memory. Its convolution weights are kept
channels-last too, so the convolutions do not reorder them on every call (the values, the
state-dict keys and shapes are unchanged; only the strides differ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvlt_core.model.attention import RopeTables, TransformerBlock
from dvlt_core.model.cache import ConstantCache
from dvlt_core.model.heads import conv_output_block, conv_upsample_blocks, float32_region, uv_grid

DECODER_MLP_RATIO = 4.0


class Decoder(nn.Module):
    """Per-view dense decoder with ``out_dim`` output channels."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        head_type: str,
        layerscale_init: float | None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.head_type = head_type
        self.head_dim = embed_dim // num_heads
        self.proj_in = nn.Linear(in_dim, embed_dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                embed_dim,
                num_heads,
                DECODER_MLP_RATIO,
                eps=1e-5,
                qk_norm=True,
                layerscale_init=layerscale_init,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        if head_type == "conv":
            self.upsample_blocks = conv_upsample_blocks(embed_dim).to(
                memory_format=torch.channels_last
            )
            self.output_block = conv_output_block(out_dim).to(memory_format=torch.channels_last)
        else:
            self.head = nn.Linear(embed_dim, out_dim * patch_size * patch_size)
        self._uv_cache = ConstantCache()
        nn.init.xavier_uniform_(self.proj_in.weight)
        nn.init.zeros_(self.proj_in.bias)

    def forward(
        self, x: Tensor, image_hw: tuple[int, int], num_special: int, rope: RopeTables
    ) -> tuple[Tensor, Tensor]:
        """x (N, P, C) → (raw output (N, o, H, W) float32, features (N, P, D))."""
        x = self.proj_in(x)
        for block in self.blocks:
            x = block(x, rope)
        features = x
        x = self.norm(x)[:, num_special:]
        with float32_region(x.device.type):
            x = x.float()
            if self.head_type == "conv":
                return self._conv_stage(x, image_hw), features
            return self._linear_stage(x, image_hw), features

    def _linear_stage(self, x: Tensor, image_hw: tuple[int, int]) -> Tensor:
        H, W = image_hw
        p = self.patch_size
        x = self.head(x).transpose(1, 2).reshape(x.shape[0], -1, H // p, W // p)
        return F.pixel_shuffle(x, p)

    def _with_uv(self, x: Tensor, size: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
        """x (N, C, h, w) → (N, C + 2, h, w) with the UV channels, in channels-last memory.

        ``size`` = (h, w) as Python ints from the image size, so a traced graph holds the UV
        grid as a constant.
        """
        (H, W), (h, w) = image_hw, size
        uv = self._uv_cache.get((h, w, H, W, x.device), lambda: uv_grid(h, w, W / H).to(x.device))
        uv = uv.permute(1, 2, 0).unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        # Concatenated as (N, h, w, C): the result is channels last.
        return torch.cat([x.permute(0, 2, 3, 1), uv], dim=-1).permute(0, 3, 1, 2)

    def _conv_stage(self, x: Tensor, image_hw: tuple[int, int]) -> Tensor:
        H, W = image_hw
        h, w = H // self.patch_size, W // self.patch_size
        # (N, h·w, D) → (N, D, h, w) as a channels-last view: no copy (N stays dynamic in a
        # traced graph, which unflatten would fix to the traced value).
        x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        for stage in self.upsample_blocks:
            x = self._with_uv(x, (h, w), image_hw)
            for layer in stage:
                x = layer(x)
            h, w = 2 * h, 2 * w
        x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        x = self._with_uv(x, (H, W), image_hw)
        return self.output_block(x)
