"""Checks of each camera stream's header stamps while a bag is read: gaps (far longer than
the usual frame interval) and time jumps (stamps going backwards). Both are warnings: a gap
makes the synchroniser time the camera out, a jump back beyond the pipeline's
``time_jump_threshold`` resets the world (a new epoch with its own outputs)."""

from __future__ import annotations

import statistics
from collections import deque

from dvlt_ros.bags.issues import IssueLog

#: A gap is an interval this many times the median recent interval, and at least
#: ``min_gap_ns`` long.
GAP_FACTOR = 3.0


class StreamMonitor:
    """Per-topic stamp checks; problems go to ``issues`` as ``gap`` / ``time_jump``."""

    def __init__(self, issues: IssueLog, jump_threshold_ns: int = 500_000_000,
                 min_gap_ns: int = 200_000_000, history: int = 20) -> None:
        self.issues = issues
        self.jump_threshold_ns = jump_threshold_ns
        self.min_gap_ns = min_gap_ns
        self._last: dict[str, int] = {}
        self._intervals: dict[str, deque[int]] = {}
        self._history = history

    def check(self, topic: str, stamp_ns: int) -> None:
        last = self._last.get(topic)
        self._last[topic] = stamp_ns
        if last is None:
            return
        interval = stamp_ns - last
        recent = self._intervals.setdefault(topic, deque(maxlen=self._history))
        if interval <= 0:
            # Small steps back are the synchroniser's out_of_order drops (it reports them).
            if -interval > self.jump_threshold_ns:
                self.issues.warn("time_jump",
                                 f"stamp jumped back by {-interval / 1e9:.3f} s (a looped or "
                                 "concatenated recording?): the reconstruction restarts in a new "
                                 "world; outputs after it carry an .epoch<N> suffix",
                                 topic, stamp_ns)
                recent.clear()
            else:
                self._last[topic] = last
            return
        if len(recent) >= 3:
            usual = statistics.median(recent)
            if interval > max(GAP_FACTOR * usual, self.min_gap_ns):
                self.issues.warn("gap",
                                 f"no frame for {interval / 1e9:.3f} s (usually every "
                                 f"{usual / 1e9:.3f} s): snapshots in between are missing",
                                 topic, stamp_ns)
                return
        recent.append(interval)
