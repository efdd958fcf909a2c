"""The loop count K of every cycle: fixed, or the largest K that fits a latency budget.

Latency model: one cycle costs ``fixed(S) + K * step(S) + post(S)`` where ``fixed`` is the
backend's time outside the loop steps (encode, decode, transfers), ``step`` the mean time
of one loop step and ``post`` everything the pipeline does around the backend
(preprocessing, pose fit, world placement, products). Each term is an exponential moving
average (``smoothing`` = weight of the newest measurement) kept per number of views S. For
an S not measured yet the nearest measured S is scaled linearly in S (encoder, heads and
frame attention are per view; global attention grows faster, which the next measurement
corrects). The model is driven only by the timings it is fed, so it is testable without a
clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dvlt_core.backends.base import StageTimings
from dvlt_core.model.config import DEFAULT_NUM_STEPS
from dvlt_ros.pipeline.events import Level, PipelineEvent

K_LIMITS = (1, 64)
K_MODES = ("fixed", "budget")


@dataclass(frozen=True)
class StageCosts:
    """Smoothed milliseconds of one cycle's parts for one S."""

    fixed_ms: float
    step_ms: float
    post_ms: float

    def total_ms(self, num_steps: int) -> float:
        return self.fixed_ms + num_steps * self.step_ms + self.post_ms

    def scaled(self, factor: float) -> StageCosts:
        return StageCosts(self.fixed_ms * factor, self.step_ms * factor, self.post_ms * factor)


class LatencyModel:
    """Per-S exponential moving averages of the measured stage times."""

    def __init__(self, smoothing: float = 0.3) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self._costs: dict[int, StageCosts] = {}

    def observe(self, num_views: int, timings: StageTimings, post_ms: float) -> None:
        """Fold one cycle's measurements in (a cycle with K=0 steps keeps the step time)."""
        steps = timings.step_ms
        fixed = max(timings.total_ms - sum(steps), 0.0)
        old = self._costs.get(num_views)
        step = sum(steps) / len(steps) if steps else (old.step_ms if old else 0.0)
        new = StageCosts(fixed, step, max(post_ms, 0.0))
        if old is not None:
            a = self.smoothing
            new = StageCosts(
                old.fixed_ms + a * (new.fixed_ms - old.fixed_ms),
                old.step_ms + a * (new.step_ms - old.step_ms) if steps else old.step_ms,
                old.post_ms + a * (new.post_ms - old.post_ms),
            )
        self._costs[num_views] = new

    def costs(self, num_views: int) -> StageCosts | None:
        """The costs for S views (measured, or scaled from the nearest measured S)."""
        if num_views in self._costs:
            return self._costs[num_views]
        if not self._costs:
            return None
        nearest = min(self._costs, key=lambda s: (abs(s - num_views), s))
        return self._costs[nearest].scaled(num_views / nearest)

    def predict_ms(self, num_views: int, num_steps: int) -> float | None:
        """Predicted cycle milliseconds, or None before the first measurement."""
        costs = self.costs(num_views)
        return None if costs is None else costs.total_ms(num_steps)

    def reset(self) -> None:
        self._costs.clear()


@dataclass(frozen=True)
class KPolicyConfig:
    """``num_steps`` is K in ``fixed`` mode; ``budget`` mode picks K in [k_min, k_max]."""

    mode: str = "fixed"
    num_steps: int = DEFAULT_NUM_STEPS
    k_min: int = 1
    k_max: int = DEFAULT_NUM_STEPS
    latency_budget_ms: float = 500.0
    smoothing: float = 0.3

    def __post_init__(self) -> None:
        lo, hi = K_LIMITS
        if self.mode not in K_MODES:
            raise ValueError(f"num_steps_mode must be one of {K_MODES}, got {self.mode!r}")
        for name in ("num_steps", "k_min", "k_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        if not self.latency_budget_ms > 0:
            raise ValueError(f"latency_budget_ms must be > 0, got {self.latency_budget_ms}")


@dataclass(frozen=True)
class KDecision:
    """The K of one cycle, why, and what it is predicted to cost (None: no data yet)."""

    num_steps: int
    mode: str
    predicted_ms: float | None
    over_budget: bool = False
    event: PipelineEvent | None = None


class KPolicy:
    """Chooses K per cycle; feed it each cycle's timings with :meth:`observe`."""

    def __init__(self, config: KPolicyConfig | None = None) -> None:
        self.config = config or KPolicyConfig()
        self.model = LatencyModel(self.config.smoothing)

    def update(self, **changes: object) -> None:
        """Change settings at runtime (validated; the latency model is kept)."""
        self.config = replace(self.config, **changes)
        self.model.smoothing = self.config.smoothing

    def choose(self, num_views: int) -> KDecision:
        """K for a window of ``num_views`` views."""
        cfg = self.config
        if cfg.mode == "fixed":
            k = cfg.num_steps
            return KDecision(k, cfg.mode, self.model.predict_ms(num_views, k))
        costs = self.model.costs(num_views)
        if costs is None:
            # Nothing measured yet: run the cheapest K once to learn the costs.
            return KDecision(cfg.k_min, cfg.mode, None)
        spare = cfg.latency_budget_ms - costs.fixed_ms - costs.post_ms
        if costs.step_ms > 0:
            fits = int(spare // costs.step_ms) if spare >= 0 else 0
        else:
            fits = cfg.k_max
        k = min(max(fits, cfg.k_min), cfg.k_max)
        predicted = costs.total_ms(k)
        if predicted <= cfg.latency_budget_ms:
            return KDecision(k, cfg.mode, predicted)
        event = PipelineEvent(
            "over_budget",
            Level.WARN,
            f"even K={k} is predicted to take {predicted:.0f} ms > latency_budget_ms="
            f"{cfg.latency_budget_ms:.0f} with S={num_views}: lower max_views or image size, "
            "or raise the budget",
        )
        return KDecision(k, cfg.mode, predicted, over_budget=True, event=event)

    def observe(self, num_views: int, timings: StageTimings, post_ms: float) -> None:
        """Feed one finished cycle's backend timings and its other milliseconds."""
        self.model.observe(num_views, timings, post_ms)
