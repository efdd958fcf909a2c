"""Structured reports of the pipeline core: what happened, how bad, and to which camera.

The core never logs and never raises on bad *input*; it returns :class:`PipelineEvent`
records that the ROS node turns into log lines and diagnostics. ``code`` is a stable
machine-readable key (one of the ``EVENT_CODES``), ``message`` says what happened and what
to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Level(IntEnum):
    """Severity, ordered like ROS log levels and diagnostic_msgs statuses."""

    INFO = 0
    WARN = 1
    ERROR = 2


EVENT_CODES = frozenset(
    {
        "camera_info_invalid",  # NaN / zero / mismatched CameraInfo: predicted intrinsics used
        "camera_info_distortion",  # distortion that cannot be rectified: CameraInfo not used
        "image_rejected",  # undecodable, too large, too small or elongated; frame dropped
        "stamp_rejected",  # unset/negative stamp, or a lone stamp far from the rig's; dropped
        "image_downscaled",  # larger than max_pixels; resized (CameraInfo scaled to match)
        "queue_overflow",  # a per-camera queue was full; the oldest frame was dropped
        "out_of_order",  # a stamp not newer than the camera's last one; frame dropped
        "time_jump_reset",  # every camera's stamps jumped back (looping bag): state reset
        "camera_timeout",  # a camera stopped publishing; windows continue without it
        "camera_recovered",  # a timed-out camera publishes again
        "camera_unknown",  # a frame from a camera that is not configured; dropped
        "resolution_mismatch",  # cameras differ in size (padded, or refused by policy)
        "views_capped",  # more cameras than max_views: the extra cameras are left out
        "no_shared_views",  # window shares no view with earlier ones: placement held
        "scale_unreliable",  # shared views gave no usable scale; previous scale kept
        "pose_fit_failed",  # some views got no pose; they are left out of the products
        "over_budget",  # even k_min is predicted to exceed latency_budget_ms
        "cycle_error",  # reconstructing a window raised; offline processing goes on
        "scale_unavailable",  # scale_source set but no source measured the scale this window
        "scale_conflict",  # auto: scale sources disagree beyond their errors
        "tf_unavailable",  # a transform needed for scale or anchoring is missing or stale
        "anchor_refused",  # anchor tf: the window could not be aligned to TF (reason given)
        "world_rescaled",  # the first metric scale: the chained world converted to metres
        "depth_rejected",  # a depth image for an unknown camera, or of the wrong kind
        "loop_closure_unavailable",  # no place descriptors or no GTSAM: loop closure off
        "loop_closure_error",  # verifying loop candidates raised; they are dropped, run goes on
    }
)


@dataclass(frozen=True)
class PipelineEvent:
    """One thing the node should report (log line + diagnostic status)."""

    code: str
    level: Level
    message: str
    camera: str | None = None
    stamp_ns: int | None = None

    def __post_init__(self) -> None:
        if self.code not in EVENT_CODES:
            raise ValueError(f"unknown event code {self.code!r}; add it to EVENT_CODES")

    def __str__(self) -> str:
        where = f"[{self.camera}] " if self.camera else ""
        return f"{self.level.name} {self.code}: {where}{self.message}"


def loop_closure_error(exc: Exception, stamp_ns: int) -> PipelineEvent:
    """``loop_closure_error``: verifying loop candidates after the window at ``stamp_ns``
    raised ``exc`` (the live node and ``dvlt-ros process`` report it and go on)."""
    return PipelineEvent(
        "loop_closure_error", Level.ERROR,
        f"verifying loop candidates after the window at {stamp_ns * 1e-9:.3f} s failed: "
        f"{type(exc).__name__}: {exc}; those candidates are dropped (the map keeps its other "
        "loops)", stamp_ns=stamp_ns)
