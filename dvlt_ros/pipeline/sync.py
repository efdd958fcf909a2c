"""Approximate-time synchronisation of several cameras into rig snapshots.

Each camera has a bounded queue (latest wins: when it is full the oldest frame is dropped
and counted). :meth:`RigSynchronizer.poll` returns the newest *complete* snapshot: one frame
per active camera, all stamps within ``slop_ns`` of each other, and consumes the queues up
to it. Cameras that stop publishing for ``camera_timeout_ns`` are left out of later
snapshots (WARN) until they publish again. A stamp that jumps back by more than
``jump_back_ns`` (a looping bag) resets the synchroniser; every snapshot carries the
``epoch`` (number of resets so far) so the window selector and the world placement reset
with it.

Cameras of different resolutions: policy ``"pad"`` (default) accepts them; the network
input is then zero-padded to the largest size (``dvlt_core.io.images.preprocess``), padding
gets zero weight in the pose fit, and every product maps back to each camera's own pixels.
Policy ``"reject"`` drops frames whose size differs from the first camera's (ERROR event).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.frames import DEFAULT_MAX_ASPECT, CameraFrame, prepare_frame

RESOLUTION_POLICIES = ("pad", "reject")
_RATE_SMOOTHING = 0.2


@dataclass(frozen=True)
class SyncConfig:
    """Settings of :class:`RigSynchronizer` (times in integer nanoseconds).

    ``cameras`` fixes the camera order (the first present camera is the reference view).
    """

    cameras: tuple[str, ...]
    slop_ns: int = 20_000_000
    queue_size: int = 4
    camera_timeout_ns: int = 1_000_000_000
    jump_back_ns: int = 500_000_000
    resolution_policy: str = "pad"
    max_pixels: int | None = 1920 * 1080
    max_aspect: float = DEFAULT_MAX_ASPECT

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("configure at least one camera")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"camera names must be unique, got {list(self.cameras)}")
        if self.slop_ns < 0:
            raise ValueError(f"slop must be >= 0, got {self.slop_ns} ns")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.camera_timeout_ns <= 0 or self.jump_back_ns < 0:
            raise ValueError("camera_timeout must be > 0 and jump_back >= 0")
        if self.resolution_policy not in RESOLUTION_POLICIES:
            raise ValueError(
                f"resolution_policy must be one of {RESOLUTION_POLICIES}, "
                f"got {self.resolution_policy!r}"
            )


@dataclass(frozen=True)
class RigSnapshot:
    """Frames of the active cameras taken at (about) the same time, in camera order."""

    frames: tuple[CameraFrame, ...]
    missing: tuple[str, ...] = ()
    epoch: int = 0

    @property
    def stamp_ns(self) -> int:
        """The reference (first) camera's stamp."""
        return self.frames[0].stamp_ns

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(f.camera for f in self.frames)

    @property
    def spread_ns(self) -> int:
        stamps = [f.stamp_ns for f in self.frames]
        return max(stamps) - min(stamps)


@dataclass
class CameraStats:
    """Counters of one camera since start (they survive resets)."""

    received: int = 0
    rejected: int = 0
    dropped_overflow: int = 0
    dropped_out_of_order: int = 0
    dropped_unmatched: int = 0
    used: int = 0
    rate_hz: float = 0.0
    timed_out: bool = False
    last_stamp_ns: int | None = None

    @property
    def dropped(self) -> int:
        return (
            self.rejected
            + self.dropped_overflow
            + self.dropped_out_of_order
            + self.dropped_unmatched
        )


@dataclass
class _CameraState:
    queue: deque[CameraFrame]
    last_stamp_ns: int | None = None
    last_arrival_ns: int | None = None
    last_size: tuple[int, int] | None = None
    timed_out: bool = False
    mismatch_reported: bool = False
    stats: CameraStats = field(default_factory=CameraStats)


class RigSynchronizer:
    """Buffers frames per camera and matches them into :class:`RigSnapshot` s.

    ``now_ns`` arguments are the caller's clock (the node's ROS clock, so that timeouts
    work in simulated time too); stamps are the frames' header stamps.
    """

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self._states = {
            name: _CameraState(deque(maxlen=config.queue_size)) for name in config.cameras
        }
        self._start_ns: int | None = None
        self._epoch = 0
        self._unknown_reported: set[str] = set()

    @property
    def epoch(self) -> int:
        """Number of resets so far (time jumps and explicit :meth:`reset` calls)."""
        return self._epoch

    def stats(self) -> dict[str, CameraStats]:
        """Per-camera counters and input rate, in camera order."""
        for state in self._states.values():
            state.stats.timed_out = state.timed_out
            state.stats.last_stamp_ns = state.last_stamp_ns
        return {name: state.stats for name, state in self._states.items()}

    def reset(self) -> None:
        """Forget every queued frame and stamp; counters are kept; the epoch advances."""
        for state in self._states.values():
            state.queue.clear()
            state.last_stamp_ns = None
            state.last_arrival_ns = None
            state.last_size = None
            state.timed_out = False
            state.mismatch_reported = False
        self._start_ns = None
        self._epoch += 1

    def add(self, frame: CameraFrame, now_ns: int) -> list[PipelineEvent]:
        """Queue one frame that arrived at ``now_ns``; returns what to report."""
        state = self._states.get(frame.camera)
        if state is None:
            if frame.camera in self._unknown_reported:
                return []
            self._unknown_reported.add(frame.camera)
            return [
                PipelineEvent(
                    "camera_unknown",
                    Level.WARN,
                    f"frames from camera {frame.camera!r} are ignored; configured cameras: "
                    f"{', '.join(self.config.cameras)}",
                    frame.camera,
                )
            ]
        if self._start_ns is None:
            self._start_ns = now_ns
        state.stats.received += 1
        prepared, events = prepare_frame(frame, self.config.max_pixels, self.config.max_aspect)
        if prepared is None:
            state.stats.rejected += 1
            return events
        last = state.last_stamp_ns
        if last is not None and prepared.stamp_ns < last - self.config.jump_back_ns:
            events.append(
                PipelineEvent(
                    "time_jump_reset",
                    Level.WARN,
                    f"stamp jumped back by {(last - prepared.stamp_ns) / 1e9:.3f} s (looping "
                    "bag or restarted clock): queues, keyframes and the world were reset",
                    frame.camera,
                    prepared.stamp_ns,
                )
            )
            self.reset()
            self._start_ns = now_ns
        elif last is not None and prepared.stamp_ns <= last:
            state.stats.dropped_out_of_order += 1
            return [
                *events,
                PipelineEvent(
                    "out_of_order",
                    Level.WARN,
                    f"stamp {prepared.stamp_ns} is not newer than the last one ({last}); "
                    "frame dropped",
                    frame.camera,
                    prepared.stamp_ns,
                ),
            ]
        mismatch = self._check_resolution(prepared, state)
        if mismatch is not None:
            events.append(mismatch)
            if mismatch.level is Level.ERROR:
                state.stats.rejected += 1
                return events
        if state.last_stamp_ns is not None:
            dt = (prepared.stamp_ns - state.last_stamp_ns) / 1e9
            rate = 1.0 / dt if dt > 0 else 0.0
            old = state.stats.rate_hz
            state.stats.rate_hz = rate if old == 0 else old + _RATE_SMOOTHING * (rate - old)
        if state.timed_out:
            state.timed_out = False
            events.append(
                PipelineEvent(
                    "camera_recovered",
                    Level.INFO,
                    "publishing again; back in the windows",
                    frame.camera,
                    prepared.stamp_ns,
                )
            )
        if len(state.queue) == state.queue.maxlen:
            state.stats.dropped_overflow += 1
        state.queue.append(prepared)
        state.last_stamp_ns = prepared.stamp_ns
        state.last_arrival_ns = now_ns
        return events

    def poll(self, now_ns: int) -> tuple[RigSnapshot | None, list[PipelineEvent]]:
        """The newest complete snapshot (consumed), or None; plus timeout events."""
        events = self._update_timeouts(now_ns)
        active = [n for n in self.config.cameras if not self._states[n].timed_out]
        if not active or any(not self._states[n].queue for n in active):
            return None, events
        reference, others = active[0], active[1:]
        for candidate in reversed(self._states[reference].queue):
            chosen = [candidate]
            for name in others:
                queue = self._states[name].queue
                chosen.append(min(queue, key=lambda f: abs(f.stamp_ns - candidate.stamp_ns)))
            stamps = [f.stamp_ns for f in chosen]
            if max(stamps) - min(stamps) <= self.config.slop_ns:
                self._consume(chosen)
                missing = tuple(n for n in self.config.cameras if n not in active)
                return RigSnapshot(tuple(chosen), missing, self._epoch), events
        return None, events

    def _consume(self, chosen: list[CameraFrame]) -> None:
        for frame in chosen:
            state = self._states[frame.camera]
            state.stats.used += 1
            while state.queue and state.queue[0].stamp_ns <= frame.stamp_ns:
                if state.queue.popleft() is not frame:
                    state.stats.dropped_unmatched += 1

    def _update_timeouts(self, now_ns: int) -> list[PipelineEvent]:
        events = []
        timeout = self.config.camera_timeout_ns
        for name, state in self._states.items():
            since = state.last_arrival_ns if state.last_arrival_ns is not None else self._start_ns
            if state.timed_out or since is None or now_ns - since <= timeout:
                continue
            state.timed_out = True
            state.stats.dropped_unmatched += len(state.queue)
            state.queue.clear()
            what = "no frame" if state.last_arrival_ns is None else "no new frame"
            events.append(
                PipelineEvent(
                    "camera_timeout",
                    Level.WARN,
                    f"{what} for {(now_ns - since) / 1e9:.2f} s (camera_timeout "
                    f"{timeout / 1e9:.2f} s): windows continue without it; check its driver "
                    "and topic",
                    name,
                )
            )
        return events

    def _check_resolution(self, frame: CameraFrame, state: _CameraState) -> PipelineEvent | None:
        """Compare the frame's size with the other cameras' latest sizes."""
        size = (frame.width, frame.height)
        if self.config.resolution_policy == "reject":
            first = self.config.cameras[0]
            ref_size = self._states[first].last_size
            if frame.camera == first or ref_size is None or ref_size == size:
                state.last_size = size
                return None
            return PipelineEvent(
                "resolution_mismatch",
                Level.ERROR,
                f"{size[0]}x{size[1]} differs from camera {first!r} ({ref_size[0]}x"
                f"{ref_size[1]}): frame dropped (resolution_policy 'reject'; use 'pad' to "
                "accept it)",
                frame.camera,
                frame.stamp_ns,
            )
        state.last_size = size
        other = next(
            (
                (n, s.last_size)
                for n, s in self._states.items()
                if n != frame.camera and s.last_size not in (None, size)
            ),
            None,
        )
        if other is None:
            state.mismatch_reported = False
            return None
        if state.mismatch_reported:
            return None
        state.mismatch_reported = True
        name, (w, h) = other
        return PipelineEvent(
            "resolution_mismatch",
            Level.INFO,
            f"{size[0]}x{size[1]} differs from camera {name!r} ({w}x{h}): views are padded to "
            "the largest size for the network",
            frame.camera,
            frame.stamp_ns,
        )
