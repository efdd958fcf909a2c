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
    count = np.broadcast_to(mask.sum(-1, keepdims=True), (*ordered.shape[:-1], 1))
    hi = np.take_along_axis(ordered, np.minimum(count // 2, x.shape[-1] - 1), axis=-1)
    if upper:
        return hi[..., 0]
    lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0), axis=-1)
    return (0.5 * (lo + hi))[..., 0]
