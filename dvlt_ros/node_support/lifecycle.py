"""How the node process ends: on SIGINT/SIGTERM, with the process that started it, and
without letting its background threads touch ROS objects that are being destroyed.

A cycle (or a model load) can sit in one long PyTorch call that cannot be interrupted. The
node therefore stops publishing at once (:class:`ShutdownGate`), gives its threads a short
grace period, and when one is still busy leaves the process with :func:`exit_now` instead
of letting the interpreter tear down a thread that is inside C++ code (which aborts with
"terminate called without an active exception").
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

# prctl(2) option: the signal the kernel sends this process when its parent ends.
_PR_SET_PDEATHSIG = 1


class GateClosedError(Exception):
    """Raised on entering a closed :class:`ShutdownGate`: the node is shutting down."""


class ShutdownGate:
    """Lets threads use the node's ROS objects only until the node shuts down.

    Threads hold the gate (:meth:`entered`) around every use of publishers, the clock or
    the logger; :meth:`close` waits for the current holder, so once it returns no thread
    touches them again (entering raises :class:`GateClosedError`).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._open = True

    @contextmanager
    def entered(self) -> Iterator[None]:
        with self._lock:
            if not self._open:
                raise GateClosedError
            yield

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open

    def close(self) -> None:
        with self._lock:
            self._open = False


def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)) -> threading.Event:
    """Install handlers that set (and return) an event on SIGINT and SIGTERM.

    The main thread must look at the event regularly (spin with a timeout): Python runs
    signal handlers between bytecodes of the main thread.
    """
    requested = threading.Event()

    def handler(signum, frame) -> None:
        requested.set()

    for sig in signals:
        signal.signal(sig, handler)
    return requested


def exit_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent (``ros2 launch``,
    ``ros2 run``, a shell) ends, so that the node never outlives its launcher. Returns
    False where the platform has no such request (the node then ends only on signals)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_now(code: int) -> None:
    """Flush the standard streams (Python's and C's, where ROS logs) and end the process
    without running interpreter finalisation (threads inside native code stay as they are)."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)
    os._exit(code)


def run_node_process(make_node: Callable[[], object], args: list[str] | None, *,
                     grace_s: float, refused: type[Exception],
                     on_refused: Callable[[Exception], None]) -> int:
    """Run a node as its own process until SIGINT/SIGTERM (or the end of the launching
    process): 0 then, 2 when ``make_node`` raises ``refused`` (``on_refused`` says why).

    The node handles the signals itself (rclpy's handlers would invalidate the context
    while a cycle may still publish); ``node.stop(grace_s)`` says whether its threads
    finished, and the process leaves with :func:`exit_now` when one did not."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    exit_with_parent()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_requested = stop_on_signals()
    try:
        node = make_node()
    except refused as exc:
        on_refused(exc)
        rclpy.shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    status = 0
    try:
        while not stop_requested.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except Exception as exc:  # a callback that raised ends the node, its threads stopped first
        node.get_logger().error(f"stopping after an error: {type(exc).__name__}: {exc}")
        status = 1
    finished = node.stop(grace_s)
    if not finished:
        node.get_logger().info("stopping without waiting for the running cycle or model load")
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    if not finished:
        exit_now(status)  # a thread inside PyTorch must not meet interpreter finalisation
    return status
