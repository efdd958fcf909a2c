"""``DVLTModel``: DINOv2 encoder, one looped frame/global block, ray/depth/camera heads.

The forward pass is three export-friendly stages with static shapes per (B, S, H, W)::

    tokens = model.encode(images)                                   # (B, S, P, C)
    for (t_now, t_next), block in plan:                             # host loop, K steps
        tokens = model.step(tokens, t_now, t_next, block, image_hw=(H, W))
    outputs = model.decode(tokens, (H, W))                          # dict of raw outputs

``forward`` is exactly that loop. The stages use no ``.item()``, no data-dependent branches and
no float64; RoPE tables, UV grids and pos-embed resampling matrices are cached per grid.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from dvlt_core.model.attention import RopeTables
from dvlt_core.model.config import DVLTConfig
from dvlt_core.model.decoders import Decoder
from dvlt_core.model.dinov2 import BACKBONE_SPECS, DinoV2Backbone
from dvlt_core.model.heads import CameraHead
from dvlt_core.model.loop_block import LoopBlock
from dvlt_core.model.rope import RopeCache
from dvlt_core.model.schedule import InferencePlan, check_num_steps, inference_plan

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEPTH_LOG_CEILING = 15.0
RAY_CHANNELS = 6


class DVLTModel(nn.Module):
    """Déjà View Looping Transformer, state-dict compatible with upstream ``DVLTModel``.

    ``DVLTModel(**kwargs)`` takes the upstream constructor keyword arguments (a Hub
    ``config.json`` or a golden case's ``config_json``; see :class:`DVLTConfig`) and refuses
    unknown ones with a ``ValueError``. No weights are downloaded: load a checkpoint with
    ``load_state_dict(..., strict=True)``.

    Call ``model(images, num_steps=None)`` with ``images`` (B, S, 3, H, W) float RGB in [0, 1],
    H and W multiples of the patch size (14); view 0 of each batch element is the reference.
    ``num_steps`` is the loop count K, any positive int per call without rebuilding. The default
    K is ``inference_steps`` if the config sets it, else ``num_steps`` (16 for the release): that
    is upstream ``DVLTModel``'s rule and the K of upstream's published benchmark (hydra config,
    ``inference_steps=None``). Upstream's Python quick-start ``DVLT(img_size=504)`` passes
    ``inference_steps=12``; pass ``num_steps=12`` (or build with ``inference_steps=12``) to
    reproduce it. Models with ``k_sampling=None`` always run their ``num_steps`` steps.

    Returns a dict of float32 tensors: ``rays`` (B,S,H,W,6) [direction(3), origin(3)],
    ``depth`` (B,S,H,W,1), ``depth_conf`` (B,S,H,W) ≥ 1, ``world_points`` (B,S,H,W,3) =
    origin + direction·depth, ``world_points_conf`` (= ``depth_conf``) and, with a camera head,
    ``pose_enc`` (B,S,9) [t(3), quat xyzw(4), fov_h, fov_w].

    Gradients are not disabled here: run inference under ``torch.inference_mode()`` (or use
    :func:`dvlt_core.model.run_model`) so memory stays flat in K. In training mode the looped
    sub-blocks apply drop-path (``drop_path``, upstream's stochastic depth); the training-time
    K sampling lives in :mod:`dvlt_core.training.k_sampler`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        config = DVLTConfig.from_kwargs(kwargs)
        self.config = config
        if config.recurrence_mode == "none" and config.k_sampling == "linspace":
            warnings.warn(
                "recurrence_mode='none' with k_sampling='linspace' applies only block 0 K times "
                "(upstream behaviour, kept for parity); the decoupled ablation uses "
                "k_sampling=None to run every block once",
                stacklevel=2,
            )
        C = config.embed_dim
        R = config.num_register_tokens
        self.patch_size = config.patch_size
        self.num_special_tokens = 1 + R

        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, C))
        self.register_token = nn.Parameter(torch.zeros(1, 1, R, C))
        nn.init.normal_(self.camera_token, std=1e-6)
        nn.init.normal_(self.register_token, std=1e-6)
        self.patch_embed_encoder = DinoV2Backbone(
            BACKBONE_SPECS[config.patch_embed], config.patch_size, R
        )
        self.recurrent_blocks = nn.ModuleList(
            LoopBlock(
                C,
                config.num_heads,
                config.mlp_ratio,
                config.gate_mode,
                config.time_conditioning,
                drop_path=config.drop_path,
            )
            for _ in range(config.num_recurrent_blocks)
        )
        self.ray_decoder = Decoder(
            C,
            RAY_CHANNELS,
            embed_dim=config.decoder_embed_dim,
            depth=config.decoder_depth,
            num_heads=config.decoder_num_heads,
            patch_size=config.patch_size,
            head_type=config.decoder_head_type,
            layerscale_init=config.decoder_init_values,
        )
        depth, width, heads, head_type = config.depth_decoder_settings
        self.depth_decoder = Decoder(
            C,
            2,
            embed_dim=width,
            depth=depth,
            num_heads=heads,
            patch_size=config.patch_size,
            head_type=head_type,
            layerscale_init=config.decoder_init_values,
        )
        self.camera_head = CameraHead(config.decoder_embed_dim) if config.camera_head else None
        self.register_buffer(
            "_resnet_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "_resnet_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False
        )
        self._rope = RopeCache(self.num_special_tokens)

    # ---- construction helpers -------------------------------------------------------------

    @classmethod
    def from_config(cls, config: DVLTConfig | dict[str, Any] | str) -> DVLTModel:
        """Build from a :class:`DVLTConfig`, a config dict or a ``config.json`` string."""
        if isinstance(config, DVLTConfig):
            return cls(**config.to_dict())
        if isinstance(config, str):
            config = json.loads(config)
        return cls(**config)

    # ---- schedule -------------------------------------------------------------------------

    def inference_plan(self, num_steps: int | None = None) -> InferencePlan:
        """Per-step ``(t_now, t_next)`` pairs and block indices for ``num_steps`` (or default K)."""
        cfg = self.config
        K = cfg.default_num_steps if num_steps is None else check_num_steps(num_steps)
        return inference_plan(cfg.k_sampling, cfg.recurrence_mode, cfg.num_steps, K)

    def inference_t_pairs(self, num_steps: int | None = None) -> Tensor:
        """(K, 2) float32 ``(t_now, t_next)`` pairs of the loop, for external host loops."""
        return self.inference_plan(num_steps).t_pairs

    # ---- stages ---------------------------------------------------------------------------

    def encode(self, images: Tensor) -> Tensor:
        """images (B, S, 3, H, W) in [0, 1] → trunk input tokens (B, S, P, C).

        P = 1 + R + h·w: [camera token (slot 0 for view 0, slot 1 otherwise), R register
        tokens, DINOv2 patch tokens row-major].
        """
        B, S, _, H, W = self._check_images(images)
        x = (images - self._resnet_mean) / self._resnet_std
        patches = self.patch_embed_encoder(x.reshape(B * S, 3, H, W))
        C = patches.shape[-1]
        camera = torch.cat(
            [
                self.camera_token[:, 0:1].expand(B, 1, -1, -1),
                self.camera_token[:, 1:2].expand(B, S - 1, -1, -1),
            ],
            dim=1,
        )
        registers = self.register_token.expand(B, S, -1, -1)
        return torch.cat([camera, registers, patches.reshape(B, S, -1, C)], dim=2)

    def step(
        self,
        tokens: Tensor,
        t_now: Tensor | float,
        t_next: Tensor | float,
        block_index: int = 0,
        *,
        image_hw: tuple[int, int],
    ) -> Tensor:
        """One loop step: ``recurrent_blocks[block_index]`` with gates for (t_now, t_next).

        ``t_now``/``t_next`` are 0-dim float32 tensors (Python floats are converted);
        ``image_hw`` = (H, W) of the input images fixes the RoPE grid. Shapes are preserved.
        """
        t_now = torch.as_tensor(t_now, dtype=torch.float32, device=tokens.device)
        t_next = torch.as_tensor(t_next, dtype=torch.float32, device=tokens.device)
        block = self.recurrent_blocks[block_index]
        rope = self._rope_tables(image_hw, self.config.embed_dim // self.config.num_heads, tokens)
        return block(tokens, t_now, t_next, rope)

    def decode(self, tokens: Tensor, image_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Final tokens (B, S, P, C) → raw outputs (see the class docstring), float32."""
        B, S, P, C = tokens.shape
        H, W = image_hw
        flat = tokens.reshape(B * S, P, C)
        chunk = self.config.decode_chunk_size or B * S
        ray_parts, depth_parts, cam_parts = [], [], []
        for start in range(0, B * S, chunk):
            part = flat[start : start + chunk]
            rays, features = self._run_decoder(self.ray_decoder, part, image_hw)
            depth, _ = self._run_decoder(self.depth_decoder, part, image_hw)
            ray_parts.append(rays)
            depth_parts.append(depth)
            cam_parts.append(features[:, 0])
        rays = _cat(ray_parts).movedim(1, -1).reshape(B, S, H, W, RAY_CHANNELS)
        depth_raw = _cat(depth_parts).movedim(1, -1)
        depth = torch.exp(depth_raw[..., 0:1].clamp(max=DEPTH_LOG_CEILING)).reshape(B, S, H, W, 1)
        depth_conf = (torch.exp(depth_raw[..., 1]) + 1.0).reshape(B, S, H, W)
        outputs = {
            "world_points": rays[..., 3:6] + rays[..., 0:3] * depth,
            "world_points_conf": depth_conf,
            "depth": depth,
            "depth_conf": depth_conf,
            "rays": rays,
        }
        if self.camera_head is not None:
            outputs["pose_enc"] = self.camera_head(_cat(cam_parts)).reshape(B, S, -1)
        return outputs

    def forward(self, images: Tensor, num_steps: int | None = None) -> dict[str, Tensor]:
        """encode → K loop steps (``num_steps`` or the default K) → decode."""
        H, W = self._check_images(images)[3:]
        plan = self.inference_plan(num_steps)
        tokens = self.encode(images)
        t_pairs = plan.t_pairs.to(images.device)
        for i, block_index in enumerate(plan.block_indices):
            tokens = self.step(tokens, t_pairs[i, 0], t_pairs[i, 1], block_index, image_hw=(H, W))
        return self.decode(tokens, (H, W))

    # ---- internals ------------------------------------------------------------------------

    def _run_decoder(
        self, decoder: Decoder, x: Tensor, image_hw: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        rope = self._rope_tables(image_hw, decoder.head_dim, x)
        return decoder(x, image_hw, self.num_special_tokens, rope)

    def _rope_tables(self, image_hw: tuple[int, int], head_dim: int, like: Tensor) -> RopeTables:
        H, W = image_hw
        p = self.patch_size
        return self._rope.get(H // p, W // p, head_dim, like.device)

    def _check_images(self, images: Tensor) -> tuple[int, int, int, int, int]:
        if not isinstance(images, Tensor) or images.dim() != 5 or images.shape[2] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"images must be a (B, S, 3, H, W) RGB tensor, got {shape}; add the batch/view "
                "axes with images[None] / images[None, None]"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"images must be float in [0, 1], got dtype {images.dtype}; divide uint8 by 255"
            )
        B, S, _, H, W = images.shape
        p = self.patch_size
        too_small = min(B, S) < 1 or min(H, W) < p
        if too_small or H % p or W % p:
            raise ValueError(
                f"images of shape {tuple(images.shape)}: B, S must be >= 1 and H, W positive "
                f"multiples of the patch size {p}; resize or crop first"
            )
        return B, S, 3, H, W


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
