"""Order-statistic quantiles with the upstream "nearest rank" rule."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_ROUNDING = {"nearest": round, "lower": math.floor, "higher": math.ceil}


def kthvalue_quantile(values: Tensor, q: float, interpolation: str = "nearest") -> Tensor:
    """Return the ``q``-quantile of all elements of ``values`` as one of its elements.

    The rank is ``k = rule(q·(n−1)) + 1`` (1-based) and the result is
    ``torch.kthvalue(values.flatten(), k)``. With ``interpolation="nearest"`` the rule is
    Python's ``round``, which rounds halves to even (``round(0.5) == 0``, ``round(2.5) == 2``):
    this is what the upstream evaluation and loss code use, and it differs from
    ``torch.quantile(..., interpolation="nearest")`` on exact halves.

    Args:
        values: any-shaped tensor with at least one element.
        q: quantile in [0, 1].
        interpolation: ``"nearest"`` (half to even), ``"lower"`` (floor) or ``"higher"`` (ceil).

    Returns:
        A 0-d tensor with the selected element.
    """
    if not 0.0 <= float(q) <= 1.0:
        raise ValueError(f"q must be a scalar in [0, 1], got {q}")
    if interpolation not in _ROUNDING:
        raise ValueError(
            f"interpolation must be one of {sorted(_ROUNDING)}, got {interpolation!r}"
        )
    flat = values.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("cannot take a quantile of an empty tensor")
    k = int(_ROUNDING[interpolation](float(q) * (flat.numel() - 1))) + 1
    return torch.kthvalue(flat, k).values
