"""The inference t-grid and step plan (docs/architecture.md §10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.model import linspace_t_pairs
from dvlt_core.model.schedule import inference_plan, stepwise_t_pairs


@pytest.mark.parametrize("case", ["case_small_public", "case_released_public"])
def test_linspace_pairs_equal_golden(reference_dir, case):
    data = np.load(reference_dir / f"{case}.npz")
    pairs = linspace_t_pairs(int(data["K"]))
    assert pairs.dtype == torch.float32
    np.testing.assert_array_equal(pairs.numpy(), data["t_pairs"])


def test_terminal_pairs():
    assert linspace_t_pairs(1).tolist() == [[0.0, 1.0]]
    assert linspace_t_pairs(2).tolist() == [[0.0, 1.0], [1.0, 1.0]]
    pairs = linspace_t_pairs(16)
    assert pairs[-1].tolist() == [1.0, 1.0]
    assert torch.equal(pairs[1:, 0], pairs[:-1, 1])


def test_grid_is_torch_float32_linspace_not_numpy():
    ts = linspace_t_pairs(7)[:, 0]
    assert ts[4].item() == 0.6666666269302368  # float32(numpy linspace) is 0.6666666865348816
    assert torch.equal(ts, torch.linspace(0, 1, 7))


def test_stepwise_plan_for_k_sampling_none():
    pairs = stepwise_t_pairs(4)
    assert pairs[:, 0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert pairs[:, 0].dtype == torch.float32
    assert stepwise_t_pairs(1)[:, 0].tolist() == [0.0]
    plan = inference_plan(None, "none", 3, 3)
    assert plan.block_indices == (0, 1, 2) and len(plan) == 3
    assert inference_plan(None, "no_depthscale", 3, 3).block_indices == (0, 0, 0)
    with pytest.raises(ValueError, match="always runs its num_steps=3"):
        inference_plan(None, "none", 3, 5)


def test_linspace_plan_uses_block_zero_for_any_k():
    for K in (1, 5, 40):
        plan = inference_plan("linspace", "gated", 16, K)
        assert plan.block_indices == (0,) * K and plan.t_pairs.shape == (K, 2)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4", None])
def test_bad_step_counts_are_refused(bad):
    with pytest.raises(ValueError, match="num_steps must be"):
        linspace_t_pairs(bad)
