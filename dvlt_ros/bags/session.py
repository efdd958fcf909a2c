"""The lossless cycle: every complete rig snapshot is reconstructed, in arrival order.

The live node in its default mode reconstructs the newest window at a fixed rate and skips
whatever arrived in between. In lossless mode (``lossless:=true``) it polls the
synchroniser after every image message instead and reconstructs each completed snapshot
in order. This class is that lossless cycle outside a node, built from the node's
parameters with the node's own config builders (:mod:`dvlt_ros.node_support.configs`):
offline processing (``dvlt-ros process``) uses it, so with the same frames in the same
order it gives the same windows, K (fixed mode) and results as a lossless replay into the
node, which the determinism test checks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from dvlt_core.backends import InferenceBackend
from dvlt_ros.node_support import configs
from dvlt_ros.pipeline import (
    CameraFrame,
    KPolicy,
    MetricScale,
    PipelineEvent,
    ReconstructionPipeline,
    RigSnapshot,
    RigSynchronizer,
    WindowSelector,
)
from dvlt_ros.pipeline.cycle import Cycle, observe_cycle, run_cycle


class LosslessSession:
    """Sync -> every snapshot -> window -> K -> result (see the module docstring).

    Per image message: :meth:`add` its frame (unless it was rejected), then
    :meth:`after_image`, then reconstruct with :meth:`next_cycle` until it returns None.
    ``max_pending`` bounds the snapshots waiting for reconstruction; beyond it the oldest
    is dropped and counted in ``dropped_snapshots`` (never happens when snapshots are
    reconstructed as they come, as offline processing does). ``on_accept`` sees every
    frame the synchroniser queues.
    """

    def __init__(
        self,
        backend: InferenceBackend,
        params: Mapping[str, object],
        metric_scale: MetricScale | None = None,
        max_pending: int = 8,
        on_accept: Callable[[CameraFrame], None] | None = None,
    ) -> None:
        self.sync = RigSynchronizer(configs.sync_config(params), on_accept)
        self.windows = WindowSelector(configs.window_config(params))
        self.k_policy = KPolicy(configs.k_policy_config(params))
        self.pipeline = ReconstructionPipeline(
            backend, configs.pipeline_config(params), world=configs.world_config(params),
            metric_scale=metric_scale,
        )
        self.sync.set_img_size(self.pipeline.reconstructor.img_size)
        self.pending: deque[RigSnapshot] = deque()
        self.max_pending = max_pending
        self.dropped_snapshots = 0

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.sync.config.cameras

    def add(self, frame: CameraFrame, now_ns: int) -> list[PipelineEvent]:
        """Add a frame; ``now_ns`` is the clock at its arrival."""
        return self.sync.add(frame, now_ns)

    def after_image(self, now_ns: int) -> list[PipelineEvent]:
        """After every image message (used or rejected), like the node: queue the
        snapshot it completed, if any (also reports camera time-outs)."""
        snapshot, events = self.sync.poll(now_ns)
        if snapshot is not None:
            if len(self.pending) >= self.max_pending:
                self.pending.popleft()
                self.dropped_snapshots += 1
            self.pending.append(snapshot)
        return events

    def next_cycle(self) -> Cycle | None:
        """Reconstruct the oldest queued snapshot, or None when none is queued."""
        if not self.pending:
            return None
        return run_cycle(self.pending.popleft(), self.windows, self.k_policy, self.pipeline)

    def observe(self, cycle: Cycle, publish_ms: float) -> None:
        """Feed the K policy one finished cycle (see :func:`observe_cycle`)."""
        observe_cycle(self.k_policy, cycle, publish_ms)
