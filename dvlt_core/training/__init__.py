"""Training utilities: the multi-task loss and the loop-count sampler."""

from dvlt_core.training.k_sampler import (
    sample_train_k,
    select_train_steps,
    step_generator,
    train_k_for_step,
)
from dvlt_core.training.losses import LossConfig, LossOutput, MultiTaskLoss

__all__ = [
    "LossConfig",
    "LossOutput",
    "MultiTaskLoss",
    "sample_train_k",
    "select_train_steps",
    "step_generator",
    "train_k_for_step",
]
