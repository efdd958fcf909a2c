"""Cache of shape-dependent constant tensors (RoPE tables, UV grids, resampling matrices)."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor


class ConstantCache:
    """Per-key constants, built once outside inference mode so autograd can use them later.

    A tensor created under ``torch.inference_mode()`` cannot take part in a later autograd
    graph, so the factories run with inference mode off (and no grad).
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, object] = {}

    def get(self, key: Hashable, factory: Callable[[], object]) -> object:
        value = self._items.get(key)
        if value is None:
            with torch.inference_mode(False), torch.no_grad():
                value = factory()
            self._items[key] = value
        return value


def to_device(tensors: tuple[Tensor, ...], device: torch.device) -> tuple[Tensor, ...]:
    """Move a tuple of constants to ``device``."""
    return tuple(t.to(device) for t in tensors)
