"""DVLT constructor arguments: the upstream keyword set, defaults and validation.

``DVLTConfig`` accepts every keyword argument of the two upstream classes that build the
network: the inner ``DVLTModel`` (the ``PyTorchModelHubMixin`` class, whose ``config.json`` on
the Hub holds exactly its 32 constructor arguments) and the outer ``DVLT`` training wrapper
(whose arguments are what the golden cases' ``config_json`` and the hydra ``model:`` section
hold). Arguments that only matter for training or postprocessing are accepted and stored but
do not change the network. Defaults are those of the inner ``DVLTModel`` (see
``docs/model.md`` for why ``inference_steps=None`` and therefore K = ``num_steps`` = 16).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from dvlt_core.model.dinov2 import BACKBONE_SPECS

# K, the number of loop steps, wherever nothing else chooses it (model config, node,
# K policy, backends, tools): the released model's num_steps, which is also the K behind
# upstream's published benchmark (docs/model.md, "Default K").
DEFAULT_NUM_STEPS = 16
#: Side of a ViT/14 patch in pixels: the default of every published configuration.
PATCH_SIZE = 14

RECURRENCE_MODES = ("gated", "no_sout", "no_depthscale", "none")
TIME_CONDITIONINGS = ("continuous", "interval")
K_SAMPLINGS = (None, "linspace")
HEAD_TYPES = ("linear", "conv")
STOCHASTIC_DEPTH_MODES = ("random", "prefix")
FINETUNE_MODES = (None, "depth_output", "depth_decoder", "depth_decoder_recurrent", "all_heads")

# The arguments that take one of a fixed set of values (and patch_embed: a BACKBONE_SPECS key).
CHOICES: dict[str, tuple] = {
    "recurrence_mode": RECURRENCE_MODES,
    "time_conditioning": TIME_CONDITIONINGS,
    "k_sampling": K_SAMPLINGS,
    "decoder_head_type": HEAD_TYPES,
    "depth_head_type": (None, *HEAD_TYPES),
    "stochastic_depth_mode": STOCHASTIC_DEPTH_MODES,
    "finetune_mode": FINETUNE_MODES,
}
# Allowed ranges of the numeric arguments, inclusive (None: unbounded). Sizes stay far above
# every published DVLT configuration (released: decoder_depth 2, widths <= 768, 16 steps, ViT-g
# backbones 1536 wide) yet low enough that a config.json cannot make building the model
# exhaust memory or time before its weights are checked against it.
NUMERIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "img_size": (1, 4096),
    "patch_size": (4, 64),
    "embed_dim": (1, 4096),
    "num_steps": (1, 64),
    "min_steps": (1, 64),
    "num_heads": (1, 64),
    "mlp_ratio": (0.25, 16.0),
    "num_register_tokens": (0, 64),
    "decoder_depth": (1, 32),
    "decoder_embed_dim": (1, 4096),
    "decoder_num_heads": (1, 64),
    "drop_path": (0.0, 1.0),
    "stochastic_depth": (0.0, 1.0),
    "k_sampler_beta_a": (1, None),
    "k_sampler_beta_b": (1, None),
    "inference_steps": (1, 1024),
    "depth_decoder_depth": (1, 32),
    "depth_decoder_embed_dim": (1, 4096),
    "depth_decoder_num_heads": (1, 64),
    "decoder_init_values": (None, None),
    "decode_chunk_size": (1, None),
    "log_every_n_steps": (1, None),
}

# The keys a ``PyTorchModelHubMixin`` ``config.json`` of upstream ``DVLTModel`` holds.
HUB_CONFIG_FIELDS = (
    "img_size",
    "patch_size",
    "embed_dim",
    "num_steps",
    "min_steps",
    "num_heads",
    "mlp_ratio",
    "num_register_tokens",
    "patch_embed",
    "load_patch_embed_weights",
    "decoder_depth",
    "decoder_embed_dim",
    "decoder_num_heads",
    "gradient_checkpointing_config",
    "camera_head",
    "drop_path",
    "stochastic_depth",
    "stochastic_depth_mode",
    "sync_stochastic_depth",
    "recurrence_mode",
    "time_conditioning",
    "k_sampling",
    "k_sampler_beta_a",
    "k_sampler_beta_b",
    "inference_steps",
    "decoder_head_type",
    "depth_head_type",
    "depth_decoder_depth",
    "depth_decoder_embed_dim",
    "depth_decoder_num_heads",
    "decoder_init_values",
    "decode_chunk_size",
)


@dataclass
class DVLTConfig:
    """Every upstream ``DVLTModel`` / ``DVLT`` constructor argument, with ``DVLTModel`` defaults.

    Architecture: ``patch_embed`` (``dinov2_vit{s,b,l}14_reg``, ``dinov2_vitg2_reg`` or its alias
    ``dinov2_vitg14_reg``), ``embed_dim`` (must equal the backbone width), ``num_heads``,
    ``mlp_ratio``, ``num_register_tokens``, ``recurrence_mode``, ``time_conditioning``,
    ``k_sampling``, ``num_steps``, ``inference_steps``, the decoder knobs and ``camera_head``.

    Stored only (training, postprocessing or memory knobs that do not change outputs):
    ``min_steps``, ``drop_path``, ``stochastic_depth*``, ``k_sampler_beta_*``,
    ``load_patch_embed_weights`` (never downloads here), ``gradient_checkpointing_config``,
    ``finetune_mode``, ``reset_depth_decoder_transformer``, ``use_depth_conf_for_pose``,
    ``world_points_from_rays``, ``loss``, ``freeze``, ``log_params``, ``log_every_n_steps``.
    ``decode_chunk_size`` only bounds the decoder batch (same results).
    """

    img_size: int = 518
    patch_size: int = PATCH_SIZE
    embed_dim: int = 768
    num_steps: int = DEFAULT_NUM_STEPS
    min_steps: int = 8
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    patch_embed: str = "dinov2_vitb14_reg"
    load_patch_embed_weights: bool = True
    decoder_depth: int = 2
    decoder_embed_dim: int = 384
    decoder_num_heads: int = 6
    gradient_checkpointing_config: dict[str, Any] | None = None
    camera_head: bool = True
    drop_path: float = 0.1
    stochastic_depth: float = 0.3
    stochastic_depth_mode: str = "random"
    sync_stochastic_depth: bool = True
    recurrence_mode: str = "gated"
    time_conditioning: str = "interval"
    k_sampling: str | None = "linspace"
    k_sampler_beta_a: int = 2
    k_sampler_beta_b: int = 1
    inference_steps: int | None = None
    decoder_head_type: str = "linear"
    depth_head_type: str | None = "conv"
    depth_decoder_depth: int | None = None
    depth_decoder_embed_dim: int | None = None
    depth_decoder_num_heads: int | None = None
    decoder_init_values: float | None = None
    decode_chunk_size: int | None = 128
    # Outer ``DVLT`` wrapper arguments (training / postprocessing only).
    finetune_mode: str | None = None
    reset_depth_decoder_transformer: bool = False
    use_depth_conf_for_pose: bool = False
    world_points_from_rays: bool = False
    loss: dict[str, Any] | None = None
    freeze: list[str] | None = None
    log_params: list[str] | None = None
    log_every_n_steps: int = 50

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> DVLTConfig:
        """Build from constructor keyword arguments, refusing unknown names."""
        known = config_field_names()
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"unknown DVLT argument(s) {unknown}: the model accepts the upstream "
                f"DVLTModel/DVLT constructor arguments only ({', '.join(sorted(known))}); "
                "fix or drop them"
            )
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text_or_dict: str | dict[str, Any]) -> DVLTConfig:
        """Build from a ``config.json`` text or dict (Hub ``DVLTModel``, golden ``config_json``)."""
        data = json.loads(text_or_dict) if isinstance(text_or_dict, str) else dict(text_or_dict)
        return cls.from_kwargs(data)

    def to_dict(self) -> dict[str, Any]:
        """All arguments as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def hub_config(self) -> dict[str, Any]:
        """The ``config.json`` upstream ``DVLTModel`` (``PyTorchModelHubMixin``) would write."""
        full = self.to_dict()
        return {k: full[k] for k in HUB_CONFIG_FIELDS}

    # ---- derived values -------------------------------------------------------------------

    @property
    def default_num_steps(self) -> int:
        """K when ``forward`` gets no ``num_steps``.

        ``inference_steps`` if set, else ``num_steps`` (upstream ``DVLTModel``); with
        ``k_sampling=None`` always ``num_steps`` (upstream ignores ``inference_steps`` there).
        """
        if self.k_sampling is None or self.inference_steps is None:
            return self.num_steps
        return self.inference_steps

    @property
    def gate_mode(self) -> str:
        """``gated`` / ``no_sout`` build depth scaling; the other modes have none."""
        return self.recurrence_mode if self.recurrence_mode in ("gated", "no_sout") else "none"

    @property
    def num_recurrent_blocks(self) -> int:
        return self.num_steps if self.recurrence_mode == "none" else 1

    @property
    def depth_decoder_settings(self) -> tuple[int, int, int, str]:
        """(depth, width, heads, head type) of the depth decoder after its overrides."""

        def pick(override: int | None, shared: int) -> int:
            return shared if override is None else override

        return (
            pick(self.depth_decoder_depth, self.decoder_depth),
            pick(self.depth_decoder_embed_dim, self.decoder_embed_dim),
            pick(self.depth_decoder_num_heads, self.decoder_num_heads),
            self.depth_head_type or self.decoder_head_type,
        )

    # ---- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ``ValueError`` on settings upstream refuses or that cannot build a network.

        Each argument's type and range is checked first (one line naming the argument, the
        allowed type or range and the value), then the choices and the relations between
        arguments, so no check ever trips over a value of the wrong type.
        """
        hints = _field_types()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            # Backbones are looked up live: tests register small ones at run time.
            allowed = (tuple(sorted(BACKBONE_SPECS)) if field.name == "patch_embed"
                       else CHOICES.get(field.name))
            if allowed is None:
                _check_type(field.name, value, hints[field.name])
            elif value not in allowed:  # tuple membership: no hashing of unhashable values
                raise ValueError(f"{field.name} must be one of {list(allowed)}, "
                                 f"got {_shown(value)}")
        if (
            self.gate_mode != "none"
            and self.time_conditioning == "interval"
            and self.k_sampling != "linspace"
        ):
            raise ValueError(
                "time_conditioning='interval' requires k_sampling='linspace' (the (t_now, t_next) "
                "pairs only exist on the linspace grid); use time_conditioning='continuous'"
            )
        if self.img_size < self.patch_size:
            raise ValueError(
                f"img_size={self.img_size} is smaller than one patch (patch_size="
                f"{self.patch_size}); use an img_size of at least {self.patch_size}"
            )
        backbone_dim = BACKBONE_SPECS[self.patch_embed].embed_dim
        if self.embed_dim != backbone_dim:
            raise ValueError(
                f"embed_dim={self.embed_dim} does not match the {self.patch_embed} width "
                f"{backbone_dim}: set embed_dim={backbone_dim} (the trunk consumes its tokens)"
            )
        _check_heads("trunk", self.embed_dim, self.num_heads)
        _check_heads("decoder", self.decoder_embed_dim, self.decoder_num_heads)
        _, width, heads, _ = self.depth_decoder_settings
        _check_heads("depth decoder", width, heads)


def config_field_names() -> frozenset[str]:
    """The argument names :class:`DVLTConfig` knows."""
    return frozenset(f.name for f in dataclasses.fields(DVLTConfig))


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(DVLTConfig)


def _shown(value: Any) -> str:
    """``repr(value)``, shortened so that an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Refuse ``value`` unless it has the field's type (JSON types) and lies in its range."""
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    if optional:
        if value is None:
            return
        (hint,) = (a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    low, high = NUMERIC_RANGES.get(name, (None, None))
    if origin is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an int"
    elif origin is float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        kind = "a finite number"
    elif origin is bool:
        ok, kind = isinstance(value, bool), "true or false"
    elif origin is str:
        ok, kind = isinstance(value, str), "a string"
    elif origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        kind = "a JSON object"
    elif origin is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        kind = "a list of strings"
    else:  # a field type this check does not know: a programming error, not bad input
        raise TypeError(f"DVLTConfig.{name}: unsupported field type {hint!r}")
    in_range = ok and (low is None or value >= low) and (high is None or value <= high)
    if in_range:
        return
    if low is not None and high is not None:
        kind += f" in [{low}, {high}]"
    elif low is not None:
        kind += f" >= {low}"
    raise ValueError(f"{name} must be {kind}{' or null' if optional else ''}, got {_shown(value)}")


def _check_heads(where: str, dim: int, heads: int) -> None:
    """Attention widths must split into heads whose size RoPE can halve twice."""
    if dim % heads:
        raise ValueError(f"{where} width {dim} is not divisible by its {heads} heads")
    if (dim // heads) % 4:
        raise ValueError(
            f"{where} head size {dim // heads} must be a multiple of 4 for 2-D RoPE; "
            "change the width or the number of heads"
        )
