"""The training forward pass: which loop steps an iteration runs, and running them.

``training_plan`` draws the steps exactly as upstream's trainer does, from the global step
only (so every rank agrees): with ``k_sampling="linspace"`` a loop count K from the
``42 + step``-seeded Beta sampler and the linspace (t_now, t_next) grid for K; with
``k_sampling=None`` the stochastic-depth subset of the ``num_steps`` steps (``random`` or
``prefix`` mode; the step count is synchronised when ``sync_stochastic_depth``).

:class:`TrainingForward` wraps the model so that data-parallel wrappers see one ``forward``;
with gradient checkpointing each loop step and the decoders are recomputed in the backward pass
instead of storing their activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dvlt_core.model import DVLTConfig, DVLTModel, linspace_t_pairs
from dvlt_core.model.schedule import stepwise_t_pairs
from dvlt_core.training.k_sampler import select_train_steps, step_generator, train_k_for_step


@dataclass(frozen=True)
class StepPlan:
    """(n, 2) float32 ``(t_now, t_next)`` pairs and the block index of each of the n steps."""

    t_pairs: Tensor
    blocks: tuple[int, ...]

    @property
    def num_steps(self) -> int:
        return len(self.blocks)


def training_plan(config: DVLTConfig, global_step: int) -> StepPlan:
    """The loop steps of training iteration ``global_step`` (see the module docstring)."""
    if config.k_sampling == "linspace":
        K = train_k_for_step(global_step, config.num_steps, config.min_steps,
                             config.k_sampler_beta_a, config.k_sampler_beta_b)
        return StepPlan(linspace_t_pairs(K), (0,) * K)
    decoupled = config.recurrence_mode == "none"
    steps = select_train_steps(
        config.num_steps,
        config.min_steps,
        shared_blocks=not decoupled,
        stochastic_depth=config.stochastic_depth,
        mode=config.stochastic_depth_mode,
        generator=step_generator(global_step) if config.sync_stochastic_depth else None,
    )
    pairs = stepwise_t_pairs(config.num_steps)[steps]
    return StepPlan(pairs, tuple(steps) if decoupled else (0,) * len(steps))


class TrainingForward(nn.Module):
    """``model`` in training: encode, the planned loop steps, decode."""

    def __init__(self, model: DVLTModel, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.model = model
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, images: Tensor, t_pairs: Tensor, blocks: tuple[int, ...]) -> dict:
        H, W = images.shape[-2:]
        tokens = self.model.encode(images)
        t_pairs = t_pairs.to(images.device)
        for i, block in enumerate(blocks):
            step = partial(self.model.step, block_index=block, image_hw=(H, W))
            tokens = self._run(step, tokens, t_pairs[i, 0], t_pairs[i, 1])
        return self._run(self.model.decode, tokens, (H, W))

    def _run(self, fn, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)
