"""Peak tensor memory of a block of code, on any device, without allocator statistics."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the context and still alive.

    ``exclude`` lists tensors (weights, buffers) whose storages are not counted.
    """

    def __init__(self, exclude: list[torch.Tensor]) -> None:
        super().__init__()
        self.live: set[int] = {id(t.untyped_storage()) for t in exclude}
        self.current = self.peak = 0

    def _release(self, key: int, nbytes: int) -> None:
        self.live.discard(key)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self.live and storage.nbytes():
                    self.live.add(key)
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._release, key, storage.nbytes())
        return out
