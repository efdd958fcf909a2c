"""The per-cycle record of the node: what K and S were used and where the time went.

One :class:`CycleReport` per cycle feeds the log line, /diagnostics, the demo's CSV/JSON
and the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: Latency stages in pipeline order (milliseconds).
STAGES = ("sync_wait", "preprocess", "inference", "pose_fit", "world", "products", "publish")


@dataclass(frozen=True)
class CycleReport:
    """One cycle. ``total_ms`` runs from taking the window to the end of publishing (it
    excludes ``sync_wait_ms``, the age of the newest frame when the cycle took it);
    ``predicted_ms`` is the K policy's estimate before the cycle (None before any
    measurement). ``drops`` counts every frame dropped so far, ``overruns`` the timer
    ticks that found a cycle still running.

    Grounding (:class:`~dvlt_ros.pipeline.grounding.GroundingStatus`): ``metric`` (products
    in metres), ``metres_per_unit`` (the scale in use, NaN when not metric),
    ``scale_source``, ``scale_spread`` (relative, NaN when unknown), ``scale_constraints``,
    ``anchor`` (chain, tf, tf_held, unanchored), ``grounding`` (one line: the scale in use,
    or ``no metric scale available: <reasons>``) and ``tf_ms`` (TF lookups of the cycle,
    part of ``world_ms``).

    Loop closure (:class:`~dvlt_ros.pipeline.loop_map.LoopStats`, totals so far):
    ``loop_closure`` (off, on, unavailable), keyframes, candidates, verified, accepted and
    rejected loops, and the milliseconds of the last keyframe's graph update (part of
    ``total_ms``), of the last verification batch (after the cycle) and of the last
    optimisation."""

    cycle: int
    stamp_ns: int
    epoch: int
    num_steps: int
    num_steps_mode: str
    predicted_ms: float | None
    num_views: int
    num_cameras: int
    num_timesteps: int
    points: int
    units: str
    sync_wait_ms: float
    preprocess_ms: float
    inference_ms: float
    pose_fit_ms: float
    world_ms: float
    products_ms: float
    publish_ms: float
    total_ms: float
    encode_ms: float
    step_ms: float
    decode_ms: float
    drops: int
    overruns: int
    metric: bool = False
    metres_per_unit: float = math.nan
    scale_source: str = "none"
    scale_spread: float = math.nan
    scale_constraints: int = 0
    anchor: str = "chain"
    grounding: str = ""
    tf_ms: float = 0.0
    loop_closure: str = "off"
    loop_keyframes: int = 0
    loop_candidates: int = 0
    loop_verified: int = 0
    loop_accepted: int = 0
    loop_rejected: int = 0
    loop_odometry_edges: int = 0
    loop_add_ms: float = 0.0
    loop_verify_ms: float = 0.0
    loop_optimise_ms: float = 0.0

    @property
    def node_overhead_ms(self) -> float:
        """Everything in the cycle but the model (backend) call."""
        return self.total_ms - self.inference_ms

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        """One log line: K, S and the milliseconds of each stage."""
        stages = " ".join(f"{s} {getattr(self, s + '_ms'):.1f}" for s in STAGES)
        return (
            f"cycle {self.cycle}: K={self.num_steps} ({self.num_steps_mode}) "
            f"S={self.num_views} ({self.num_cameras} cam x {self.num_timesteps}) "
            f"points={self.points} ms: {stages} total {self.total_ms:.1f} "
            f"drops={self.drops} overruns={self.overruns} {self.grounding}"
        ).rstrip()
