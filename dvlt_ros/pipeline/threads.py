"""torch's intra-op CPU thread count for the work of one cycle (parameter ``torch_threads``).

``torch.set_num_threads`` sets OpenMP's (and MKL's) thread count of the *calling* thread: a
thread that already ran torch operations keeps its own count whatever another thread sets
(only threads that have not run one yet start from the last value set anywhere). So the
count is set by the thread that runs the model, around each cycle's work, and put back
afterwards, which leaves that thread (``dvlt-ros process`` runs on the caller's) and the
default of new threads as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads on this thread (0: leave the count as
    it is); yields the count in effect."""
    if threads < 0:
        raise ValueError(f"torch_threads must be >= 0, got {threads}")
    previous = torch.get_num_threads()
    if not threads or threads == previous:
        yield previous
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
