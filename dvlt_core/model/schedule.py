"""Inference loop schedule: which (t_now, t_next) pair and which block each step uses.

``k_sampling="linspace"`` (the release): ``ts = torch.linspace(0, 1, K)`` in float32 (torch's
two-sided formula, up to 1 ulp from numpy's), step ``i`` gets ``(ts[i], ts[i+1])`` and the last
step gets ``(ts[K-1], 1.0)``: ``(1, 1)`` for K ≥ 2 (a Δt = 0 terminal marker) and ``(0, 1)``
for K = 1. Every step applies block 0.

``k_sampling=None``: exactly ``num_steps`` steps, step ``k`` at ``t = k / max(num_steps - 1, 1)``
(Python float, rounded once to float32; only the continuous gates read it, t_next is the next
step's t or 1.0 and is ignored), with block ``k`` for ``recurrence_mode="none"`` (a distinct
block per step) and block 0 otherwise.

The host loop of any backend (eager, ONNX, TensorRT) iterates this plan and calls ``step``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class InferencePlan:
    """``t_pairs`` (n, 2) float32 and the recurrent block index of each of the n steps."""

    t_pairs: Tensor
    block_indices: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.block_indices)


def check_num_steps(num_steps: object) -> int:
    """Return ``num_steps`` as an int ≥ 1 or raise a ``ValueError`` saying what is expected."""
    if isinstance(num_steps, bool):
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    try:
        value = operator.index(num_steps)
    except TypeError:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}") from None
    if value < 1:
        raise ValueError(f"num_steps must be >= 1, got {value}")
    return value


def linspace_t_pairs(num_steps: int) -> Tensor:
    """(K, 2) float32 ``(t_now, t_next)`` pairs of the linspace loop."""
    K = check_num_steps(num_steps)
    ts = torch.linspace(0.0, 1.0, K, dtype=torch.float32)
    t_next = torch.cat([ts[1:], torch.ones(1, dtype=torch.float32)])
    return torch.stack([ts, t_next], dim=1)


def stepwise_t_pairs(num_steps: int) -> Tensor:
    """(N, 2) float32 pairs of the ``k_sampling=None`` loop: ``t_k = k / max(N - 1, 1)``."""
    N = check_num_steps(num_steps)
    ts = [k / max(N - 1, 1) for k in range(N)]
    return torch.tensor(
        [[t, ts[k + 1] if k + 1 < N else 1.0] for k, t in enumerate(ts)], dtype=torch.float32
    )


def inference_plan(
    k_sampling: str | None, recurrence_mode: str, config_num_steps: int, num_steps: int
) -> InferencePlan:
    """The step plan for ``num_steps`` steps of a model built with the given settings.

    With ``k_sampling=None`` the step count is fixed by the model: ``num_steps`` must equal
    ``config_num_steps``.
    """
    K = check_num_steps(num_steps)
    if k_sampling == "linspace":
        return InferencePlan(linspace_t_pairs(K), (0,) * K)
    if config_num_steps != K:
        raise ValueError(
            f"this model has k_sampling=None and always runs its num_steps={config_num_steps} "
            f"steps; got num_steps={K}: pass num_steps=None (or {config_num_steps})"
        )
    blocks = tuple(range(K)) if recurrence_mode == "none" else (0,) * K
    return InferencePlan(stepwise_t_pairs(K), blocks)
