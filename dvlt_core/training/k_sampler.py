"""How many loop steps a training iteration runs, exactly as the upstream trainer draws them.

Two regimes, selected by the model's ``k_sampling``:

* ``"linspace"`` (released model): one loop count ``K`` per iteration from a scaled Beta(a, b),
  drawn with a CPU generator seeded ``42 + global_step`` so every rank agrees
  (:func:`sample_train_k`, :func:`train_k_for_step`).
* ``None`` (ablations): stochastic depth over the ``num_steps`` step indices, in mode
  ``"random"`` or ``"prefix"`` (:func:`select_train_steps`).
"""

from __future__ import annotations

import torch

from dvlt_core.model.config import DEFAULT_NUM_STEPS

SEED_OFFSET = 42


def step_generator(global_step: int) -> torch.Generator:
    """The rank-independent CPU generator of a training iteration, seeded ``42 + global_step``."""
    return torch.Generator(device="cpu").manual_seed(SEED_OFFSET + int(global_step))


def sample_train_k(
    generator: torch.Generator | None,
    num_steps: int = DEFAULT_NUM_STEPS,
    min_steps: int = 8,
    beta_a: int = 2,
    beta_b: int = 1,
) -> int:
    """Draw a loop count ``K ∈ [min_steps, num_steps]`` with ``(K − min_steps)/span ≈ Beta(a, b)``.

    Draws ``a + b`` Exp(1) samples ``e`` (one ``exponential_`` call on ``generator``; the global
    RNG if None), sets ``m = Σe[:a] / Σe`` ~ Beta(a, b) and returns
    ``min_steps + min(round(m·span), span)`` with ``span = num_steps − min_steps`` and Python's
    half-to-even ``round``. With the released (16, 8, 2, 1): K ∈ [8, 16], E[K] ≈ 13.3.
    """
    if not (isinstance(beta_a, int) and isinstance(beta_b, int) and beta_a >= 1 and beta_b >= 1):
        raise ValueError(f"beta_a and beta_b must be positive ints, got {beta_a}, {beta_b}")
    if not 1 <= min_steps <= num_steps:
        raise ValueError(f"need 1 <= min_steps <= num_steps, got {min_steps}, {num_steps}")
    draws = torch.empty(beta_a + beta_b).exponential_(generator=generator)
    gamma_a = draws[:beta_a].sum()
    gamma_b = draws[beta_a:].sum()
    m = (gamma_a / (gamma_a + gamma_b)).item()
    span = num_steps - min_steps
    return min_steps + min(round(m * span), span)


def train_k_for_step(
    global_step: int,
    num_steps: int = DEFAULT_NUM_STEPS,
    min_steps: int = 8,
    beta_a: int = 2,
    beta_b: int = 1,
) -> int:
    """``K`` of training iteration ``global_step`` (synchronised across ranks)."""
    return sample_train_k(step_generator(global_step), num_steps, min_steps, beta_a, beta_b)


def select_train_steps(
    num_steps: int,
    min_steps: int,
    shared_blocks: bool,
    stochastic_depth: float = 0.3,
    mode: str = "random",
    generator: torch.Generator | None = None,
    selection_generator: torch.Generator | None = None,
) -> list[int]:
    """Step indices (ascending) one training iteration runs when ``k_sampling`` is None.

    Blocks: with ``shared_blocks`` (looped modes) all ``num_steps`` steps form one block whose
    minimum is ``min_steps``; otherwise (``recurrence_mode="none"``) every step is its own block
    with minimum 1, so every step always runs.

    ``mode="random"``: per block, ``linspace(start, end − 1, minimum)`` steps (truncated to
    integers) are forced, plus the first and the last step. With a ``generator`` (synchronised
    mode) the number of extra steps is the count of ``rand(n_optional) ≥ stochastic_depth``
    from it, and which optional steps are kept is a ``randperm(n_optional)`` from
    ``selection_generator`` (upstream: the global RNG, so ranks differ in *which* steps but not
    how many). Without a ``generator`` each optional step is kept iff a global-RNG
    ``rand(num_steps)`` entry is ≥ ``stochastic_depth``.

    ``mode="prefix"``: per block, the first ``minimum`` steps run; each further step consumes
    one ``rand`` coin from ``generator`` and the prefix stops at the first coin
    ``< stochastic_depth`` (geometric stopping).

    ``stochastic_depth <= 0`` runs every step in both modes.
    """
    if mode not in ("random", "prefix"):
        raise ValueError(f"stochastic depth mode must be 'random' or 'prefix', got {mode!r}")
    if not 1 <= min_steps <= num_steps:
        raise ValueError(f"need 1 <= min_steps <= num_steps, got {min_steps}, {num_steps}")
    if shared_blocks:
        blocks = [(0, num_steps, min_steps)]
    else:
        blocks = [(k, k + 1, 1) for k in range(num_steps)]
    if stochastic_depth <= 0:
        return list(range(num_steps))
    if mode == "prefix":
        return _prefix_steps(blocks, stochastic_depth, generator)
    return _random_steps(num_steps, blocks, stochastic_depth, generator, selection_generator)


def _random_steps(
    num_steps: int,
    blocks: list[tuple[int, int, int]],
    drop: float,
    generator: torch.Generator | None,
    selection_generator: torch.Generator | None,
) -> list[int]:
    keep = torch.zeros(num_steps, dtype=torch.bool)
    for start, end, minimum in blocks:
        keep[torch.linspace(start, end - 1, minimum).long()] = True
    keep[0] = True
    keep[num_steps - 1] = True
    if generator is not None:
        optional = (~keep).nonzero(as_tuple=True)[0]
        if len(optional) > 0:
            n_extra = int((torch.rand(len(optional), generator=generator) >= drop).sum())
            order = torch.randperm(len(optional), generator=selection_generator)
            keep[optional[order[:n_extra]]] = True
    else:
        keep = keep | (torch.rand(num_steps) >= drop)
    return keep.nonzero(as_tuple=True)[0].tolist()


def _prefix_steps(
    blocks: list[tuple[int, int, int]], drop: float, generator: torch.Generator | None
) -> list[int]:
    steps: list[int] = []
    for start, end, minimum in blocks:
        cutoff = minimum
        if minimum < end - start:
            for i, coin in enumerate(torch.rand(end - start - minimum, generator=generator)):
                if coin < drop:
                    break
                cutoff = minimum + i + 1
        steps.extend(range(start, start + cutoff))
    return steps
