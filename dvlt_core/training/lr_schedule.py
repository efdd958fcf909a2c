"""AdamW and upstream's learning-rate schedules (per optimizer step).

``cosine``: linear warmup from 0 over ``warmup_steps``, then
``min_lr_ratio + (1 − min_lr_ratio) · max(0, ½(1 + cos(2π · num_cycles · progress)))`` with
``progress = (step − warmup) / (total − warmup)``; ``constant`` and ``constant_with_warmup``
and ``linear`` (decay to ``min_lr_ratio``) as upstream's ``get_scheduler``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


def build_optimizer(
    param_groups: Sequence[dict[str, Any]],
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over prepared groups (each with its own ``lr`` and ``weight_decay``)."""
    return torch.optim.AdamW(list(param_groups), betas=tuple(betas), eps=eps)


def lr_lambda(
    name: str,
    warmup_steps: int,
    total_steps: int,
    num_cycles: float = 0.5,
    min_lr_ratio: float = 0.01,
) -> Callable[[int], float]:
    """The multiplier of the base learning rate at optimizer step ``step``."""
    if name not in SCHEDULES:
        raise ValueError(f"lr scheduler must be one of {SCHEDULES}, got {name!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        if name in ("constant", "constant_with_warmup"):
            return 1.0
        progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
        if name == "linear":
            return min_lr_ratio + (1.0 - min_lr_ratio) * max(0.0, 1.0 - progress)
        unit = max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
        return min_lr_ratio + (1.0 - min_lr_ratio) * unit

    if name == "constant":
        return lambda step: 1.0
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    warmup_steps: int,
    total_steps: int,
    num_cycles: float = 0.5,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step."""
    return LambdaLR(optimizer, lr_lambda(name, warmup_steps, total_steps, num_cycles,
                                         min_lr_ratio))
