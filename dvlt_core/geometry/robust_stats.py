"""Order statistics over masked entries, batched (used by the robust pose fit)."""

from __future__ import annotations

import numpy as np


def masked_median(x: np.ndarray, mask: np.ndarray | None, upper: bool = False) -> np.ndarray:
    """Median over the last axis of the entries where ``mask`` (broadcast to ``x``) is True.

    The midpoint of the two middle values, or with ``upper`` the upper one. Rows without
    entries give ``inf``. ``mask=None`` means all entries (the same result, faster).
    """
    if mask is None:
        ordered = np.sort(x, axis=-1)
        size = x.shape[-1]
        hi = ordered[..., size // 2]
        return hi if upper else 0.5 * (ordered[..., (size - 1) // 2] + hi)
    ordered = np.sort(np.where(mask, x, np.inf), axis=-1)
    size = ordered.shape[-1]
    flat = ordered.reshape(-1, size)
    rows = np.arange(flat.shape[0])
    count = np.broadcast_to(mask, ordered.shape).sum(-1).reshape(-1)
    hi = flat[rows, np.minimum(count // 2, size - 1)]
    if not upper:
        hi = 0.5 * (flat[rows, np.maximum((count - 1) // 2, 0)] + hi)
    return hi.reshape(ordered.shape[:-1])
