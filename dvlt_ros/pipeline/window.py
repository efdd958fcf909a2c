"""View windows: the newest rig snapshot plus earlier keyframe snapshots.

Every cycle :meth:`WindowSelector.select` gets the newest complete snapshot and returns the
window to reconstruct. The snapshot that was newest in the *previous* window becomes a
keyframe when it is at least ``keyframe_min_spacing_ns`` after the last keyframe and its
images changed by at least ``keyframe_min_change`` (mean absolute difference of
downsampled grey images, 0..1, averaged over cameras). Only snapshots that were already
reconstructed become keyframes, so with ``max_timesteps >= 2`` every window shares at least
one snapshot with the window before it; the world placement anchors on those shared views.

View order (deterministic): the newest snapshot's cameras in camera order, then keyframes
from newest to oldest, each in camera order. View 0, the newest snapshot's first camera,
is the reference view. The number of views S is capped by ``max_views``: whole keyframe
snapshots are left out first; if the newest snapshot alone has more cameras than
``max_views``, its last cameras are left out (WARN).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.frames import CameraFrame
from dvlt_ros.pipeline.sync import RigSnapshot


@dataclass(frozen=True)
class WindowConfig:
    """``max_timesteps`` is T (snapshots per window), ``max_views`` caps S = cameras x T."""

    max_timesteps: int = 3
    max_views: int = 8
    keyframe_min_spacing_ns: int = 250_000_000
    keyframe_min_change: float = 0.02
    thumbnail_size: int = 32

    def __post_init__(self) -> None:
        if self.max_timesteps < 1 or self.max_views < 1:
            raise ValueError(
                f"max_timesteps and max_views must be >= 1, got {self.max_timesteps} and "
                f"{self.max_views}"
            )
        if self.keyframe_min_spacing_ns < 0 or not 0.0 <= self.keyframe_min_change <= 1.0:
            raise ValueError("keyframe spacing must be >= 0 and image change in [0, 1]")
        if self.thumbnail_size < 4:
            raise ValueError(f"thumbnail_size must be >= 4, got {self.thumbnail_size}")


@dataclass(frozen=True)
class ViewWindow:
    """The views of one reconstruction, in network order (``frames[0]`` is the reference).

    ``timesteps[i]`` is 0 for the newest snapshot's views, 1 for the newest keyframe, ...
    """

    frames: tuple[CameraFrame, ...]
    timesteps: tuple[int, ...]
    epoch: int = 0
    events: tuple[PipelineEvent, ...] = ()

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def stamp_ns(self) -> int:
        """Stamp of the reference view (the newest snapshot)."""
        return self.frames[0].stamp_ns

    @property
    def keys(self) -> tuple[tuple[str, int], ...]:
        return tuple(f.key for f in self.frames)

    @property
    def newest(self) -> tuple[CameraFrame, ...]:
        """The newest snapshot's frames."""
        return tuple(f for f, t in zip(self.frames, self.timesteps, strict=True) if t == 0)


def grey_thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    """Block-mean grey image with the longer side about ``size`` px, float32 in [0, 1]."""
    height, width = rgb.shape[:2]
    step = max(1, math.ceil(max(height, width) / size))
    rows, cols = height // step, width // step
    if rows == 0 or cols == 0:
        step, rows, cols = 1, height, width
    block = rgb[: rows * step, : cols * step].reshape(rows, step, cols, step, 3)
    return block.mean(axis=(1, 3), dtype=np.float32).mean(axis=-1) / 255.0


class WindowSelector:
    """Keeps the keyframes and builds one :class:`ViewWindow` per cycle."""

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self._keyframes: deque[RigSnapshot] = deque(maxlen=max(config.max_timesteps - 1, 1))
        self._thumbs: dict[tuple[str, int], np.ndarray] = {}
        self._last: RigSnapshot | None = None
        self._epoch: int | None = None

    @property
    def keyframes(self) -> tuple[RigSnapshot, ...]:
        """Current keyframe snapshots, oldest first."""
        return tuple(self._keyframes) if self.config.max_timesteps > 1 else ()

    def reset(self) -> None:
        """Forget keyframes (time jump, new epoch)."""
        self._keyframes.clear()
        self._thumbs.clear()
        self._last = None

    def image_change(self, a: RigSnapshot, b: RigSnapshot) -> float:
        """Mean absolute grey difference of the cameras both snapshots hold (1.0 if none)."""
        diffs = []
        for frame in a.frames:
            other = next((f for f in b.frames if f.camera == frame.camera), None)
            if other is None:
                continue
            ta, tb = self._thumb(frame), self._thumb(other)
            diffs.append(1.0 if ta.shape != tb.shape else float(np.abs(ta - tb).mean()))
        return float(np.mean(diffs)) if diffs else 1.0

    def select(self, snapshot: RigSnapshot) -> ViewWindow:
        """Promote the previous newest snapshot if it qualifies; window for ``snapshot``."""
        if self._epoch is not None and snapshot.epoch != self._epoch:
            self.reset()
        self._epoch = snapshot.epoch
        last = self._last
        if last is not None and snapshot.stamp_ns > last.stamp_ns and self._qualifies(last):
            self._keyframes.append(last)
        self._last = snapshot
        live = {f.key for snap in (*self._keyframes, snapshot) for f in snap.frames}
        self._thumbs = {k: v for k, v in self._thumbs.items() if k in live}
        return self._build(snapshot)

    def forget(self, snapshot: RigSnapshot) -> None:
        """Never promote ``snapshot`` to a keyframe: its cycle failed, so later windows
        must not carry it."""
        if self._last is snapshot:
            self._last = None

    def _qualifies(self, candidate: RigSnapshot) -> bool:
        if self.config.max_timesteps < 2:
            return False
        if not self._keyframes:
            return True
        previous = self._keyframes[-1]
        if candidate.stamp_ns - previous.stamp_ns < self.config.keyframe_min_spacing_ns:
            return False
        return self.image_change(candidate, previous) >= self.config.keyframe_min_change

    def _build(self, snapshot: RigSnapshot) -> ViewWindow:
        cfg = self.config
        events = []
        newest = snapshot.frames
        if len(newest) > cfg.max_views:
            left_out = [f.camera for f in newest[cfg.max_views :]]
            newest = newest[: cfg.max_views]
            events.append(
                PipelineEvent(
                    "views_capped",
                    Level.WARN,
                    f"{len(snapshot.frames)} cameras exceed max_views={cfg.max_views}: left out "
                    f"{', '.join(left_out)} (raise max_views)",
                    stamp_ns=snapshot.stamp_ns,
                )
            )
        frames, steps = list(newest), [0] * len(newest)
        for step, keyframe in enumerate(reversed(self.keyframes), start=1):
            if step >= cfg.max_timesteps or len(frames) + len(keyframe.frames) > cfg.max_views:
                break
            frames.extend(keyframe.frames)
            steps.extend([step] * len(keyframe.frames))
        return ViewWindow(tuple(frames), tuple(steps), snapshot.epoch, tuple(events))

    def _thumb(self, frame: CameraFrame) -> np.ndarray:
        thumb = self._thumbs.get(frame.key)
        if thumb is None:
            thumb = grey_thumbnail(frame.rgb, self.config.thumbnail_size)
            self._thumbs[frame.key] = thumb
        return thumb
