"""Approximate-time synchronisation of several cameras into rig snapshots.

Each camera has a bounded queue (latest wins: when it is full the oldest frame is dropped
and counted). :meth:`RigSynchronizer.poll` returns the newest *complete* snapshot: one frame
per active camera, all stamps within ``slop_ns`` of each other, and consumes the queues up
to it. Cameras that stop publishing for ``camera_timeout_ns`` are left out of later
snapshots (WARN) until they publish again.

Time jumps: a stamp more than ``jump_back_ns`` behind its camera's last one, or more than
``max_stamp_jump_ns`` away from the rig's newest stamp, is held, not used. It is a real
jump (a looping bag, a restarted or reset sim clock) once every active camera has jumped
with it (frames within ``max_stamp_jump_ns`` of each other; on a rig with one active
camera, two frames): a jump back then resets the synchroniser, a jump forward is taken as
is, and the held frames are used. It is a lone outlier (a bad stamp of one driver) when
its camera publishes at the old time again, or when the held frames overflow
``queue_size``: those frames are refused with a ``stamp_rejected`` WARN and the world
stays. Every snapshot carries the ``epoch`` (number of resets so far) so the window
selector and the world placement reset with it.

Cameras of different resolutions: policy ``"pad"`` (default) accepts them; the network
input is then zero-padded to the largest size (``dvlt_core.io.images.preprocess``), padding
gets zero weight in the pose fit, and every product maps back to each camera's own pixels.
Policy ``"reject"`` drops frames whose size differs from the first camera's (ERROR event).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dvlt_core.io.image_decode import DEFAULT_MAX_PIXELS
from dvlt_core.io.images import image_size_problem
from dvlt_core.io.rectify import Rectifier
from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.frames import DEFAULT_IMG_SIZE, CameraFrame, prepare_frame

RESOLUTION_POLICIES = ("pad", "reject")
_RATE_SMOOTHING = 0.2


@dataclass(frozen=True)
class SyncConfig:
    """Settings of :class:`RigSynchronizer` (times in integer nanoseconds).

    ``cameras`` fixes the camera order (the first present camera is the reference view).
    ``img_size``: the network input size the arrival checks use (None: the released
    model's until :meth:`RigSynchronizer.set_img_size` gives the loaded model's).
    """

    cameras: tuple[str, ...]
    slop_ns: int = 20_000_000
    queue_size: int = 4
    camera_timeout_ns: int = 1_000_000_000
    jump_back_ns: int = 500_000_000
    max_stamp_jump_ns: int = 10_000_000_000
    resolution_policy: str = "pad"
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    img_size: int | None = None

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("configure at least one camera")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"camera names must be unique, got {list(self.cameras)}")
        if self.slop_ns < 0:
            raise ValueError(f"slop must be >= 0, got {self.slop_ns} ns")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.camera_timeout_ns <= 0 or self.jump_back_ns < 0 or self.max_stamp_jump_ns <= 0:
            raise ValueError("camera_timeout and max_stamp_jump must be > 0, jump_back >= 0")
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
    #: Clock (the ``now_ns`` given to :meth:`RigSynchronizer.add`) when its last frame
    #: was queued.
    arrived_ns: int | None = None

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
    arrivals: dict[int, int] = field(default_factory=dict)  # stamp -> arrival, queued frames
    last_size: tuple[int, int] | None = None
    timed_out: bool = False
    mismatch_reported: bool = False
    stats: CameraStats = field(default_factory=CameraStats)


@dataclass
class _HeldJump:
    """Frames whose stamps jumped, waiting for the other cameras to follow."""

    frames: list[CameraFrame] = field(default_factory=list)

    @property
    def cameras(self) -> set[str]:
        return {f.camera for f in self.frames}

    @property
    def newest_ns(self) -> int:
        return max(f.stamp_ns for f in self.frames)


class RigSynchronizer:
    """Buffers frames per camera and matches them into :class:`RigSnapshot` s.

    ``now_ns`` arguments are the caller's clock (the node's ROS clock, so that timeouts
    work in simulated time too); stamps are the frames' header stamps. ``on_accept`` is
    called with every frame that enters a queue (after a time jump, possibly later than
    its :meth:`add`).
    """

    def __init__(
        self, config: SyncConfig, on_accept: Callable[[CameraFrame], None] | None = None
    ) -> None:
        self.config = config
        self._states = {
            name: _CameraState(deque(maxlen=config.queue_size)) for name in config.cameras
        }
        self._start_ns: int | None = None
        self._epoch = 0
        self._unknown_reported: set[str] = set()
        self._img_size = config.img_size or DEFAULT_IMG_SIZE
        self._newest_ns: int | None = None
        self._held: _HeldJump | None = None
        self._on_accept = on_accept
        # Undistortion maps of each camera's CameraInfo (two per camera: a new calibration
        # replaces an old one without evicting another camera's).
        self._rectifier = Rectifier("k", cache_size=max(8, 2 * len(config.cameras)))

    @property
    def epoch(self) -> int:
        """Number of resets so far (time jumps and explicit :meth:`reset` calls)."""
        return self._epoch

    @property
    def img_size(self) -> int:
        """The network input size arrivals are checked against."""
        return self._img_size

    def set_img_size(self, img_size: int) -> list[PipelineEvent]:
        """Check arrivals against ``img_size`` (the loaded model's) from now on; queued
        frames the network cannot take at that size are dropped as rejected."""
        self._img_size = int(img_size)
        events = []
        for name, state in self._states.items():
            kept = deque(maxlen=state.queue.maxlen)
            for frame in state.queue:
                problem = image_size_problem(frame.height, frame.width, self._img_size)
                if problem is None:
                    kept.append(frame)
                    continue
                state.stats.rejected += 1
                events.append(PipelineEvent("image_rejected", Level.ERROR,
                                            f"{problem}; frame dropped", name, frame.stamp_ns))
            state.queue = kept
        return events

    def stats(self) -> dict[str, CameraStats]:
        """Per-camera counters and input rate, in camera order."""
        for state in self._states.values():
            state.stats.timed_out = state.timed_out
            state.stats.last_stamp_ns = state.last_stamp_ns
        return {name: state.stats for name, state in self._states.items()}

    def count_rejected(self, camera: str) -> None:
        """Count an image of ``camera`` refused before it became a frame (undecodable,
        unset stamp, ...): it was received and rejected."""
        state = self._states.get(camera)
        if state is not None:
            state.stats.received += 1
            state.stats.rejected += 1

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
        self._newest_ns = None
        self._held = None
        self._epoch += 1

    def add(self, frame: CameraFrame, now_ns: int) -> list[PipelineEvent]:
        """Queue one frame that arrived at ``now_ns`` (or hold it while its stamp jumped
        alone); returns what to report."""
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
        prepared, events = prepare_frame(frame, self.config.max_pixels, self._img_size,
                                         self._rectifier)
        if prepared is None:
            state.stats.rejected += 1
            return events
        if self._jumped(prepared, state):
            return events + self._hold(prepared, now_ns)
        if self._held is not None and prepared.camera in self._held.cameras:
            events += self._refuse_held()  # its camera is back at the rig's time
        return events + self._accept(prepared, state, now_ns)

    def _jumped(self, frame: CameraFrame, state: _CameraState) -> bool:
        """Whether ``frame``'s stamp is a jump: far ahead of the rig's newest stamp, or far
        behind its camera's last one (the rig's newest for a camera without one)."""
        newest = self._newest_ns
        if newest is None:
            return False
        stamp = frame.stamp_ns
        if stamp > newest + self.config.max_stamp_jump_ns:
            return True
        if state.last_stamp_ns is not None:
            return stamp < state.last_stamp_ns - self.config.jump_back_ns
        return stamp < newest - self.config.max_stamp_jump_ns

    def _hold(self, frame: CameraFrame, now_ns: int) -> list[PipelineEvent]:
        """Hold a jumped frame; take the jump once every active camera followed it."""
        events: list[PipelineEvent] = []
        held = self._held
        if held is not None and abs(frame.stamp_ns - held.newest_ns) > (
                self.config.max_stamp_jump_ns):
            events += self._refuse_held()
            held = None
        if held is None:
            held = self._held = _HeldJump()
        held.frames.append(frame)
        own = [f for f in held.frames if f.camera == frame.camera]
        if len(own) > self.config.queue_size:
            held.frames.remove(own[0])
            events += self._refuse([own[0]])
        active = {name for name, state in self._states.items() if not state.timed_out}
        if len(held.frames) >= 2 and held.cameras >= active:
            events += self._take_jump(now_ns)
        return events

    def _take_jump(self, now_ns: int) -> list[PipelineEvent]:
        """Every active camera jumped: a jump back resets; the held frames are queued."""
        held, self._held = self._held, None
        first = held.frames[0]
        events: list[PipelineEvent] = []
        if first.stamp_ns < self._newest_ns:
            events.append(
                PipelineEvent(
                    "time_jump_reset",
                    Level.WARN,
                    f"every camera's stamps jumped back by "
                    f"{(self._newest_ns - first.stamp_ns) / 1e9:.3f} s (looping bag or "
                    "restarted clock): queues, keyframes and the world were reset",
                    first.camera,
                    first.stamp_ns,
                )
            )
            self.reset()
            self._start_ns = now_ns
        for frame in sorted(held.frames, key=lambda f: f.stamp_ns):
            events += self._accept(frame, self._states[frame.camera], now_ns)
        return events

    def _refuse_held(self) -> list[PipelineEvent]:
        held, self._held = self._held, None
        return self._refuse(held.frames) if held is not None else []

    def _refuse(self, frames: list[CameraFrame]) -> list[PipelineEvent]:
        """Drop held frames whose jump no other camera followed (lone outliers)."""
        events = []
        for frame in frames:
            self._states[frame.camera].stats.rejected += 1
            offset = (frame.stamp_ns - self._newest_ns) / 1e9
            side = "ahead of" if offset > 0 else "behind"
            events.append(
                PipelineEvent(
                    "stamp_rejected",
                    Level.WARN,
                    f"stamp {frame.stamp_ns / 1e9:.3f} s is {abs(offset):.3f} s {side} the "
                    "rig's newest and the other cameras did not follow: frame dropped as a "
                    "lone outlier (check the camera's clock; max_stamp_jump and "
                    "time_jump_threshold set what counts as a jump)",
                    frame.camera,
                    frame.stamp_ns,
                )
            )
        return events

    def _accept(self, frame: CameraFrame, state: _CameraState,
                now_ns: int) -> list[PipelineEvent]:
        """Queue a frame whose stamp fits the rig's time (unless it is out of order or
        refused by the resolution policy)."""
        events: list[PipelineEvent] = []
        last = state.last_stamp_ns
        if last is not None and frame.stamp_ns <= last:
            state.stats.dropped_out_of_order += 1
            return [
                PipelineEvent(
                    "out_of_order",
                    Level.WARN,
                    f"stamp {frame.stamp_ns} is not newer than the last one ({last}); "
                    "frame dropped",
                    frame.camera,
                    frame.stamp_ns,
                )
            ]
        mismatch = self._check_resolution(frame, state)
        if mismatch is not None:
            events.append(mismatch)
            if mismatch.level is Level.ERROR:
                state.stats.rejected += 1
                return events
        if last is not None:
            dt = (frame.stamp_ns - last) / 1e9
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
                    frame.stamp_ns,
                )
            )
        if len(state.queue) == state.queue.maxlen:
            state.stats.dropped_overflow += 1
        state.queue.append(frame)
        state.last_stamp_ns = frame.stamp_ns
        state.last_arrival_ns = now_ns
        state.arrivals[frame.stamp_ns] = now_ns
        if len(state.arrivals) > len(state.queue):  # forget frames that left the queue
            queued = {f.stamp_ns for f in state.queue}
            state.arrivals = {s: t for s, t in state.arrivals.items() if s in queued}
        if self._newest_ns is None or frame.stamp_ns > self._newest_ns:
            self._newest_ns = frame.stamp_ns
        if self._on_accept is not None:
            self._on_accept(frame)
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
                arrivals = [self._states[f.camera].arrivals.get(f.stamp_ns) for f in chosen]
                known = [a for a in arrivals if a is not None]
                self._consume(chosen)
                missing = tuple(n for n in self.config.cameras if n not in active)
                return RigSnapshot(tuple(chosen), missing, self._epoch,
                                   max(known) if known else None), events
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
