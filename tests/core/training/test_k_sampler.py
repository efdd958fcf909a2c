"""The training loop-count sampler (``ksampler__`` golden) and stochastic-depth step selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.training import (
    sample_train_k,
    select_train_steps,
    step_generator,
    train_k_for_step,
)


def test_k_per_step_matches_upstream(reference_dir):
    with np.load(reference_dir / "metrics_golden.npz") as data:
        steps, expected = data["ksampler__steps"], data["ksampler__K"]
    ks = np.array([train_k_for_step(int(s)) for s in steps])
    np.testing.assert_array_equal(ks, expected)
    assert ks.min() >= 8 and ks.max() <= 16
    assert ks.mean() == pytest.approx(8 + 8 * 2 / 3, abs=0.2)  # E[K] of the scaled Beta(2, 1)


def test_k_sampler_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    train_k_for_step(5)
    assert torch.equal(torch.rand(1), before)
    assert train_k_for_step(5) == train_k_for_step(5)


def test_k_sampler_rounds_half_to_even():
    # span 1 with Beta(1, 1): K = min + round(m); m < 0.5 → min, m > 0.5 → min + 1.
    gen = torch.Generator().manual_seed(0)
    draws = torch.empty(2).exponential_(generator=gen)
    m = float(draws[0] / draws.sum())
    assert sample_train_k(torch.Generator().manual_seed(0), 5, 4, 1, 1) == 4 + round(m)
    with pytest.raises(ValueError):
        sample_train_k(None, num_steps=4, min_steps=8)


def test_random_mode_forces_spread_steps_and_counts_extras_from_the_step_generator():
    torch.manual_seed(0)
    for step in range(20):
        steps = select_train_steps(16, 8, True, 0.3, "random", step_generator(step))
        forced = {0, 2, 4, 6, 8, 10, 12, 15}  # linspace(0, 15, 8) truncated, plus first/last
        assert forced <= set(steps) and steps == sorted(steps)
        n_extra = int((torch.rand(8, generator=step_generator(step)) >= 0.3).sum())
        assert len(steps) == 8 + n_extra


def test_random_mode_selection_uses_the_given_generator():
    picks = {
        tuple(select_train_steps(16, 8, True, 0.3, "random", step_generator(3),
                                 torch.Generator().manual_seed(seed)))
        for seed in (1, 1, 2, 3, 4, 5)
    }
    first = select_train_steps(16, 8, True, 0.3, "random", step_generator(3),
                               torch.Generator().manual_seed(1))
    again = select_train_steps(16, 8, True, 0.3, "random", step_generator(3),
                               torch.Generator().manual_seed(1))
    assert first == again
    assert len({len(p) for p in picks}) == 1  # the count comes from the step generator only
    assert len(picks) > 1  # which optional steps are kept comes from the selection generator


def test_prefix_mode_stops_at_the_first_drop_coin():
    for step in range(20):
        steps = select_train_steps(16, 8, True, 0.3, "prefix", step_generator(step))
        coins = torch.rand(8, generator=step_generator(step))
        dropped = (coins < 0.3).nonzero()
        expected = 8 + (int(dropped[0]) if len(dropped) else 8)
        assert steps == list(range(expected))


def test_decoupled_ablation_runs_every_block_and_zero_drop_runs_all():
    for mode in ("random", "prefix"):
        assert select_train_steps(16, 16, False, 0.3, mode, step_generator(0)) == list(range(16))
        assert select_train_steps(16, 8, True, 0.0, mode, step_generator(0)) == list(range(16))
    torch.manual_seed(0)
    unsynced = select_train_steps(16, 8, True, 0.3, "random", None)
    assert {0, 2, 4, 6, 8, 10, 12, 15} <= set(unsynced)
    with pytest.raises(ValueError, match="random"):
        select_train_steps(16, 8, True, 0.3, "linspace")
