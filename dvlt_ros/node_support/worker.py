"""One background thread that runs the node's cycles, so inference never blocks the
executor (subscriptions keep flowing while the model runs).

The cycle timer only wakes the worker. A wake-up while a cycle is running is remembered
once (the next cycle starts as soon as this one ends and takes the newest window then);
further wake-ups during the same cycle are counted as overruns, never queued.
"""

from __future__ import annotations

import logging
import threading
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
