"""Order statistics over masked entries, batched (used by the robust pose fit)."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_median(x: Tensor, mask: Tensor, upper: bool = False) -> Tensor:
    """Median over the last dim of the entries where ``mask`` (broadcast to ``x``) is True.

    The midpoint of the two middle values, or with ``upper`` the upper one. Rows without
    entries give ``inf``.
    """
    ordered = torch.where(mask, x, torch.inf).sort(dim=-1).values
    count = mask.sum(-1, keepdim=True).expand(*ordered.shape[:-1], 1)
    hi = ordered.gather(-1, (count // 2).clamp_max(x.shape[-1] - 1))
    if upper:
        return hi.squeeze(-1)
    lo = ordered.gather(-1, ((count - 1) // 2).clamp_min(0))
    return (0.5 * (lo + hi)).squeeze(-1)
