"""The node's two background threads: one runs the cycles, so inference never blocks the
executor (subscriptions keep flowing while the model runs); one publishes what a cycle made,
so the next cycle's inference overlaps the publishing of the last.

The cycle timer only wakes the worker. A wake-up while a cycle is running is remembered
once (the next cycle starts as soon as this one ends and takes the newest window then);
further wake-ups during the same cycle are counted as overruns, never queued.

Publishing jobs run one at a time in the order they were submitted (so messages go out in
cycle order); at most ``max_pending`` wait, and a submit beyond that blocks the worker until
one has run, so nothing is dropped and memory stays bounded when publishing is slower than
the cycles.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)


class CycleWorker:
    """Runs ``cycle()`` on a daemon thread each time :meth:`wake` is called."""

    def __init__(self, cycle: Callable[[], None], name: str = "dvlt-cycle",
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._cycle = cycle
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending = False
        self._busy = False
        self._stopped = False
        self.cycles = 0
        self.overruns = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    @property
    def running(self) -> bool:
        """True until the thread ended (after :meth:`stop` and the cycle it was in)."""
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: a long cycle should end early."""
        with self._cond:
            return self._stopped

    def wake(self) -> None:
        """Ask for a cycle; coalesced with one already pending, counted if overrun."""
        with self._cond:
            if self._pending:
                self.overruns += 1
            self._pending = True
            self._cond.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no cycle runs or is pending; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._busy or self._pending), timeout)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the running cycle (if any) and end the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopped)
                if self._stopped:
                    return
                self._pending = False
                self._busy = True
            try:
                self._cycle()
            except Exception as exc:  # a failed cycle must not end the node
                if self._on_error is not None:
                    self._on_error(exc)
                else:
                    logger.exception("cycle failed")
            finally:
                with self._cond:
                    self._busy = False
                    self.cycles += 1
                    self._cond.notify_all()


class OrderedPublisher:
    """Runs submitted jobs (callables) on one daemon thread in submission order."""

    def __init__(self, name: str = "dvlt-publish", max_pending: int = 2,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._on_error = on_error
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._jobs: deque[Callable[[], None]] = deque()
        self._busy = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """True until the thread ended (after :meth:`stop` and the jobs queued before it)."""
        return self._thread.is_alive()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` after those already submitted; blocks while ``max_pending`` wait.
        After :meth:`stop` the job is run on the caller's thread (it still runs, in order,
        once the queue is empty)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._jobs) < self._max_pending or self._stopped)
            if not self._stopped:
                self._jobs.append(job)
                self._cond.notify_all()
                return
            self._cond.wait_for(lambda: not (self._jobs or self._busy))
            self._busy = True
        self._run_one(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has run; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._jobs or self._busy), timeout)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Run the jobs already queued, then end the thread (waits up to ``timeout``)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _call(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # a failed publish must not end the thread
            if self._on_error is not None:
                self._on_error(exc)
            else:
                logger.exception("publishing failed")

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._stopped)
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._busy = True
                self._cond.notify_all()
            self._run_one(job)

    def _run_one(self, job: Callable[[], None]) -> None:
        """Run ``job`` (marked busy by the caller), then let the next one start."""
        try:
            self._call(job)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
