"""Active problems of the node, for log lines and diagnostics.

Each problem (bad input, a silent camera, a failed checkpoint load) is logged once when
it appears or changes, shown in diagnostics while it lasts and cleared by the event
that resolves it (a good frame from that camera, a successful load). Transient problems
(a time jump) expire on their own.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from dvlt_ros.pipeline.events import Level, PipelineEvent

_NUMBERS = re.compile(r"\d+(\.\d+)?")
# The byte values of diagnostic_msgs/DiagnosticStatus levels, as ints.
OK, WARN, ERROR = 0, 1, 2
#: DiagnosticStatus level of each pipeline event level.
LEVELS = {Level.INFO: OK, Level.WARN: WARN, Level.ERROR: ERROR}
# Seconds a reported problem stays in diagnostics unless reported again (a bad stream
# re-reports it with every frame); timeouts and model errors last until resolved.
PROBLEM_TTL_S = 5.0
_PERSISTENT = {"camera_timeout"}


@dataclass(frozen=True)
class Problem:
    """One active problem of ``source`` (a camera name, ``"model"`` or ``"pipeline"``)."""

    source: str
    kind: str
    level: int
    message: str
    since: float
    expires: float | None


class ProblemBoard:
    """Thread-safe set of active problems keyed by (source, kind)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._problems: dict[tuple[str, str], Problem] = {}

    def report(
        self, source: str, kind: str, level: int, message: str, ttl: float | None = None
    ) -> bool:
        """Record a problem; return True when it is new, or its level or the wording of
        its message changed (numbers such as stamps aside): the caller logs it then, so
        a stream of the same bad frames gives one log line. ``ttl`` seconds makes it
        expire unless reported again."""
        now = self._clock()
        key = (source, kind)
        with self._lock:
            old = self._problems.get(key)
            fresh = (
                old is None or old.level != level
                or _NUMBERS.sub("#", old.message) != _NUMBERS.sub("#", message)
            )
            self._problems[key] = Problem(
                source, kind, level, message, now if fresh else old.since,
                None if ttl is None else now + ttl,
            )
        return fresh

    def clear(self, source: str, kind: str | None = None) -> list[Problem]:
        """Remove the problems of ``source`` (of one ``kind``, or all); return them."""
        with self._lock:
            keys = [k for k in self._problems if k[0] == source and kind in (None, k[1])]
            return [self._problems.pop(k) for k in keys]

    def active(self, source: str | None = None) -> list[Problem]:
        """Unexpired problems (of ``source``, or all), oldest first."""
        now = self._clock()
        with self._lock:
            for key in [k for k, p in self._problems.items() if p.expires and p.expires < now]:
                del self._problems[key]
            found = [p for p in self._problems.values() if source in (None, p.source)]
        return sorted(found, key=lambda p: p.since)

    def level(self, source: str | None = None) -> int:
        """The worst level of the active problems (OK when there are none)."""
        return max((p.level for p in self.active(source)), default=OK)


class EventReporter:
    """Shows pipeline events on a :class:`ProblemBoard` and logs them (a problem once
    while it persists). ``logger`` is an rclpy logger (or anything with ``info``,
    ``warning`` and ``error``)."""

    def __init__(self, problems: ProblemBoard, cameras: list[str], logger,
                 ttl_s: float = PROBLEM_TTL_S) -> None:
        self.problems = problems
        self.cameras = cameras
        self.logger = logger
        self.ttl_s = ttl_s

    def __call__(self, event: PipelineEvent) -> None:
        source = event.camera or "pipeline"
        if event.code == "camera_recovered":
            self.problems.clear(source, "camera_timeout")
        elif event.code == "time_jump_reset":
            # The synchroniser forgets time-outs when it resets (a camera still silent
            # times out again), so no camera_recovered event would ever clear them.
            for camera in self.cameras:
                self.problems.clear(camera, "camera_timeout")
        if event.level == Level.INFO:
            self.logger.info(str(event))
            return
        ttl = None if event.code in _PERSISTENT else self.ttl_s
        if not self.problems.report(source, event.code, LEVELS[event.level], event.message,
                                    ttl):
            return
        # rclpy fixes the severity of each logging call site: one call per level.
        if event.level == Level.ERROR:
            self.logger.error(str(event))
        else:
            self.logger.warning(str(event))

    def failure(self, kind: str, message: str) -> None:
        """Show a failure of the pipeline (ERROR, expiring) and log it once."""
        if self.problems.report("pipeline", kind, ERROR, message, self.ttl_s):
            self.logger.error(message)
