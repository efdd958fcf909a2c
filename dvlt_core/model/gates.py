"""Step-conditioned depth scaling: the gates of the looped block (docs/architecture.md §9).

A sinusoidal embedding of the step time goes through ``Linear → SiLU → Linear`` and ``+ 1``,
giving ``G`` per-channel gate vectors (``s_attn``, ``s_mlp`` and, in gated mode, ``s_out``).

* interval conditioning sees the pair ``(t_now, t_next)``: ``[e(t_now), e(t_next)]`` (128 values);
* continuous conditioning sees ``t_now`` only: ``e(t_now)`` (64 values).

``e(t) = [cos(t·f_0..31), sin(t·f_0..31)]`` with ``f_k = exp(-ln(10000)·k/32)``, kept in the
persistent ``freqs`` buffer (it is in the checkpoint and is loaded, not recomputed).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EMBED_DIM = 64


class DepthScaling(nn.Module):
    """Gate MLP of one sub-block; ``forward`` returns the G·C gates of one step."""

    def __init__(self, dim: int, num_gates: int, time_conditioning: str) -> None:
        super().__init__()
        half = EMBED_DIM // 2
        self.interval = time_conditioning == "interval"
        self.register_buffer(
            "freqs", torch.exp(-math.log(10000.0) * torch.arange(half).float() / half)
        )
        in_dim = 2 * EMBED_DIM if self.interval else EMBED_DIM
        self.proj = nn.Sequential(
            nn.Linear(in_dim, EMBED_DIM), nn.SiLU(), nn.Linear(EMBED_DIM, num_gates * dim)
        )
        self.num_gates = num_gates
        # Gates start at exactly 1 (interval) or 1 + O(1e-4) (continuous), as upstream.
        last = self.proj[-1]
        if self.interval:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        else:
            nn.init.normal_(last.weight, std=1e-4)
            nn.init.normal_(last.bias, std=1e-4)

    def _embed(self, t: Tensor) -> Tensor:
        args = t.reshape(1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([args.cos(), args.sin()], dim=-1)

    def forward(self, t_now: Tensor, t_next: Tensor, rows: int = 1) -> Tensor:
        """t_now, t_next: 0-dim float32 tensors → gates (rows, G·C), identical rows.

        One row per sequence of the sub-block, as upstream computes them: the matrix kernels
        then round exactly as upstream's do.
        """
        emb = self._embed(t_now)
        if self.interval:
            emb = torch.cat([emb, self._embed(t_next)], dim=-1)
        return self.proj(emb.expand(rows, -1)) + 1
