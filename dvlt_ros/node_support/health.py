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

_NUMBERS = re.compile(r"\d+(\.\d+)?")
# The byte values of diagnostic_msgs/DiagnosticStatus levels, as ints.
OK, WARN, ERROR = 0, 1, 2


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
