"""One cycle of the node, shared by the live node and offline processing.

A rig snapshot becomes a view window (keyframes), the K policy picks the loop count for
its size, and the pipeline reconstructs it; after the products are published or written,
the measured times feed the K policy's latency model. Keeping this in one place is what
makes offline processing give the live node's results.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvlt_ros.pipeline.engine import CycleResult, ReconstructionPipeline
from dvlt_ros.pipeline.k_policy import KDecision, KPolicy
from dvlt_ros.pipeline.sync import RigSnapshot
from dvlt_ros.pipeline.window import ViewWindow, WindowSelector


@dataclass(frozen=True)
class Cycle:
    """One reconstructed snapshot: its window, the K decision and the result."""

    window: ViewWindow
    decision: KDecision
    result: CycleResult


def run_cycle(
    snapshot: RigSnapshot,
    windows: WindowSelector,
    k_policy: KPolicy,
    pipeline: ReconstructionPipeline,
) -> Cycle:
    """Window ``snapshot``, choose K and reconstruct. A snapshot whose reconstruction
    raises is never kept as a keyframe (the exception propagates)."""
    window = windows.select(snapshot)
    decision = k_policy.choose(len(window))
    try:
        result = pipeline.submit(window, decision.num_steps)
    except Exception:
        windows.forget(snapshot)
        raise
    return Cycle(window, decision, result)


def observe_cycle(k_policy: KPolicy, cycle: Cycle, publish_ms: float) -> None:
    """Feed the K policy one finished cycle; its time outside the backend includes
    ``publish_ms``, the time spent publishing or writing its products."""
    result = cycle.result
    k_policy.observe(len(cycle.window), result.backend_timings,
                     result.timings.post_ms + publish_ms)
