"""Which parameters train, in which named groups, with which learning rate and weight decay.

Groups are upstream's (``DVLT._get_param_groups``): without a finetune mode ``patch_embed``,
``recurrent_blocks``, ``camera_token``, ``register_token``, ``ray_decoder``, ``depth_decoder``
and ``camera_head``; the finetune modes keep only the groups they train:

=========================== ==================================================================
``depth_output``            ``depth_decoder_output``: the depth decoder's output stage (conv
                            upsampling + output block, or the linear head)
``depth_decoder``           ``depth_decoder``
``depth_decoder_recurrent`` ``depth_decoder`` and ``recurrent_blocks``
``all_heads``               ``ray_decoder``, ``depth_decoder``, ``camera_head``
=========================== ==================================================================

Everything outside the kept groups is frozen (``requires_grad=False``), and ``freeze`` paths
(dotted module or parameter names, upstream's ``model.freeze``) are frozen on top. Each group is
split into a decayed part (parameters with more than one dimension that are not biases) and a
part without weight decay (norms, LayerScale, biases, tokens), as upstream does; the learning
rate of a group is ``learning_rate · lr_param_group_multipliers.get(group, 1)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from dvlt_core.model import DVLTModel

FINETUNE_MODES = ("depth_output", "depth_decoder", "depth_decoder_recurrent", "all_heads")
GROUP_NAMES = ("patch_embed", "recurrent_blocks", "camera_token", "register_token",
               "ray_decoder", "depth_decoder", "depth_decoder_output", "camera_head")


def _output_stage(decoder: nn.Module) -> list[nn.Parameter]:
    if getattr(decoder, "head_type", None) == "conv":
        return [*decoder.upsample_blocks.parameters(), *decoder.output_block.parameters()]
    return list(decoder.head.parameters())


def parameter_groups(model: DVLTModel, finetune_mode: str | None = None) -> dict[str, list]:
    """Upstream's named parameter groups for ``finetune_mode`` (None = full training)."""
    heads: dict[str, Iterable[nn.Parameter]] = {
        "ray_decoder": model.ray_decoder.parameters(),
        "depth_decoder": model.depth_decoder.parameters(),
    }
    if model.camera_head is not None:
        heads["camera_head"] = model.camera_head.parameters()
    if finetune_mode is None:
        groups: dict[str, Iterable[nn.Parameter]] = {
            "patch_embed": model.patch_embed_encoder.parameters(),
            "recurrent_blocks": model.recurrent_blocks.parameters(),
            "camera_token": [model.camera_token],
            "register_token": [model.register_token],
            **heads,
        }
    elif finetune_mode == "depth_output":
        groups = {"depth_decoder_output": _output_stage(model.depth_decoder)}
    elif finetune_mode == "depth_decoder":
        groups = {"depth_decoder": model.depth_decoder.parameters()}
    elif finetune_mode == "depth_decoder_recurrent":
        groups = {
            "depth_decoder": model.depth_decoder.parameters(),
            "recurrent_blocks": model.recurrent_blocks.parameters(),
        }
    elif finetune_mode == "all_heads":
        groups = heads
    else:
        raise ValueError(f"finetune mode must be None or one of {FINETUNE_MODES}, "
                         f"got {finetune_mode!r}")
    return {name: list(params) for name, params in groups.items()}


def _resolve(model: nn.Module, path: str) -> nn.Module | nn.Parameter:
    target: Any = model
    for attr in path.split("."):
        if not hasattr(target, attr):
            raise ValueError(f"cannot freeze {path!r}: the model has no {attr!r} there")
        target = getattr(target, attr)
    if not isinstance(target, nn.Module | nn.Parameter):
        raise ValueError(f"cannot freeze {path!r}: it is neither a module nor a parameter")
    return target


def apply_freezing(
    model: DVLTModel, finetune_mode: str | None = None, freeze: Sequence[str] = ()
) -> dict[str, list[nn.Parameter]]:
    """Set ``requires_grad`` for ``finetune_mode`` and ``freeze``; return the trainable groups.

    ``mask_token`` (unused by the network) never trains, as upstream. Raises if nothing is left
    to train.
    """
    groups = parameter_groups(model, finetune_mode)
    keep = {id(p) for params in groups.values() for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    model.patch_embed_encoder.mask_token.requires_grad_(False)
    for path in freeze:
        target = _resolve(model, path)
        params = [target] if isinstance(target, nn.Parameter) else target.parameters()
        for p in params:
            p.requires_grad_(False)
    trainable = {name: [p for p in ps if p.requires_grad] for name, ps in groups.items()}
    trainable = {name: ps for name, ps in trainable.items() if ps}
    if not trainable:
        raise ValueError("no trainable parameters left: check finetune.mode and finetune.freeze")
    return trainable


def optimizer_param_groups(
    model: nn.Module,
    groups: Mapping[str, Sequence[nn.Parameter]],
    learning_rate: float,
    weight_decay: float,
    lr_multipliers: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: per named group a decayed and a non-decayed part, with multiplied lr.

    Each dict also carries ``name`` (``<group>`` or ``<group>/no_decay``) for logging.
    Multipliers of groups that are frozen in this run are ignored (as upstream); names that are
    no group at all are refused.
    """
    multipliers = dict(lr_multipliers or {})
    unknown = sorted(set(multipliers) - set(GROUP_NAMES))
    if unknown:
        raise ValueError(f"lr_param_group_multipliers names unknown groups {unknown}; "
                         f"groups are {GROUP_NAMES}")
    group_of = {id(p): name for name, ps in groups.items() for p in ps}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        group = group_of.get(id(p))
        if group is None or not p.requires_grad:
            continue
        decay = p.ndim > 1 and not name.endswith(".bias")
        buckets.setdefault((group, decay), []).append(p)
    return [
        {
            "params": params,
            "lr": learning_rate * multipliers.get(group, 1.0),
            "weight_decay": weight_decay if decay else 0.0,
            "name": group if decay else f"{group}/no_decay",
        }
        for (group, decay), params in buckets.items()
    ]
