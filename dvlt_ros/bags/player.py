"""Play a rosbag2 into live topics with ``/clock``, without rosbag2 installed.

Messages are published as the recorded CDR bytes (no deserialisation), in log-time order,
paced by the wall clock (``rate`` x real time). Before each message ``/clock`` is set to
its log time, and while the player sleeps ``/clock`` advances smoothly at
``clock_rate`` Hz, so nodes with ``use_sim_time:=true`` see the recording's time. Topics
recorded transient-local (``/tf_static`` above all) are re-published latched, as
``ros2 bag play`` does, with a depth that keeps every recorded message.

Lossless mode implements the player side of :mod:`dvlt_ros.bags.handshake`: after each
image the reconstruction node subscribes to, the player waits for the node's
acknowledgement; the recording's time stands still meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from std_msgs.msg import UInt64

from dvlt_ros.bags.handshake import ACK_QOS
from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.msgtypes import IMAGE_TYPES
from dvlt_ros.bags.source import BagMessage, BagSource
from dvlt_ros.conversions.tf import stamp_from_ns

SpinOnce = Callable[[float], None]
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class PlayOptions:
    """``rate``: playback speed factor (0: as fast as possible); ``topics``: play only
    these (remapped names; None: all); ``start_offset_s``: skip this much of the start;
    ``loop``: repeat forever (until stopped); ``clock``: publish /clock; ``lossless``:
    wait for ``ack_topic`` after every image the acknowledging node subscribes to."""

    rate: float = 1.0
    topics: tuple[str, ...] | None = None
    start_offset_s: float = 0.0
    loop: bool = False
    clock: bool = True
    clock_rate: float = 40.0
    queue_depth: int = 10
    lossless: bool = False
    ack_topic: str = "/reconstruct_node/consumed"
    ack_timeout_s: float = 60.0
    discovery_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.start_offset_s < 0 or self.clock_rate <= 0:
            raise ValueError("rate and start offset must be >= 0 and clock_rate > 0")


@dataclass
class PlayReport:
    """What was played: messages published, images acknowledged, loops, wall time."""

    published: int = 0
    acknowledged: int = 0
    loops: int = 0
    wall_s: float = 0.0
    waited_s: float = 0.0
    stopped: bool = False


class BagPlayer:
    """Plays ``bag`` through publishers of ``node`` (see the module docstring).

    ``spin_once(timeout_s)`` must process the callbacks of ``node`` (and may run other
    nodes: tests spin the reconstruction node in the same executor).
    """

    def __init__(self, node: Node, bag: BagSource, options: PlayOptions, spin_once: SpinOnce,
                 log: Callable[[str, str], None] | None = None) -> None:
        self.node = node
        self.bag = bag
        self.options = options
        self._spin_once = spin_once
        self._log = log or (lambda level, text: None)
        self.issues: IssueLog = bag.issues
        self._stop = False
        self.report = PlayReport()
        self._publishers = self._make_publishers(self._selected_topics())
        self._clock = node.create_publisher(Clock, "/clock", CLOCK_QOS) if options.clock else None
        self._consumed: int | None = None
        self._acked_topics: set[str] = set()
        if options.lossless:
            node.create_subscription(UInt64, options.ack_topic, self._on_ack, ACK_QOS)

    # ------------------------------------------------------------------ setup
    def _selected_topics(self) -> list[str]:
        topics = self.options.topics
        if topics is None:
            return sorted(self.bag.topics)
        unknown = [t for t in topics if t not in self.bag.topics]
        if unknown:
            raise BagError(f"topic(s) {', '.join(unknown)} are not in {self.bag.path}; its "
                           f"topics are: {', '.join(sorted(self.bag.topics))}")
        return list(topics)

    def _make_publishers(self, topics: Iterable[str]) -> dict[str, object]:
        publishers = {}
        for name in topics:
            info = self.bag.topics[name]
            problem = self.bag.topic_problem(name)
            if problem is not None:
                self.issues.warn(problem.code, f"{problem}: the topic is not played", name)
                continue
            cls = self.bag.message_class(name)
            latched = info.durability == "transient_local" or name == "/tf_static"
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=max(1, min(info.count, 1000)) if latched else self.options.queue_depth,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                else DurabilityPolicy.VOLATILE,
            )
            publishers[name] = (self.node.create_publisher(cls, name, qos), latched, info.msgtype)
        if not publishers:
            raise BagError(f"nothing to play from {self.bag.path}: no topic of a known type "
                           "whose messages deserialise (see the warnings above)")
        return publishers

    @property
    def topics(self) -> list[str]:
        """The topics being played."""
        return list(self._publishers)

    def subscriber_count(self, topic: str) -> int:
        """Subscriptions matched with the player's publisher of ``topic``."""
        return self._publishers[topic][0].get_subscription_count()

    def _on_ack(self, msg: UInt64) -> None:
        self._consumed = int(msg.data)

    def stop(self) -> None:
        """End playback after the current message (signal-handler safe)."""
        self._stop = True

    # ------------------------------------------------------------------ lossless setup
    def _ack_owner(self) -> tuple[str, str] | None:
        """(name, namespace) of the node publishing the acknowledgements, once discovered
        (across processes the endpoint can be seen before its node's name)."""
        for info in self.node.get_publishers_info_by_topic(self.options.ack_topic):
            if not info.node_name.startswith("_NODE_NAME_UNKNOWN"):
                return info.node_name, info.node_namespace
        return None

    def _connect_lossless(self) -> int:
        """Wait for the acknowledging node; return its current count (the baseline)."""
        opts = self.options
        deadline = time.monotonic() + opts.discovery_timeout_s
        images = [t for t, (_, _, kind) in self._publishers.items() if kind in IMAGE_TYPES]
        owner, subscribed, settle = None, set(), None
        while True:
            owner = self._ack_owner()
            if owner is not None:
                wanted = {
                    t for t in self._publishers
                    if any((i.node_name, i.node_namespace) == owner
                           for i in self.node.get_subscriptions_info_by_topic(t))
                }
                subscribed = wanted & set(images)
                matched = all(self.subscriber_count(t) > 0 for t in wanted)
                if subscribed and matched and self._consumed is not None:
                    # Give the node's other subscriptions time to be discovered too.
                    settle = settle or time.monotonic() + 0.5
                    if time.monotonic() > settle:
                        break
            if time.monotonic() > deadline or self._stop:
                if owner is None:
                    raise BagError(
                        f"no node publishes {opts.ack_topic} after "
                        f"{opts.discovery_timeout_s:.0f} s: start reconstruct_node with "
                        "lossless:=true (and use_sim_time:=true), or point --ack-topic at its "
                        "<node>/consumed topic")
                raise BagError(
                    f"node {owner[1].rstrip('/')}/{owner[0]} subscribes to none of the image "
                    f"topics {', '.join(images) or '(none in the bag)'} or does not answer on "
                    f"{opts.ack_topic}: check its cameras parameter or remap topics with --remap"
                )
            self._spin_once(0.05)
        self._acked_topics = subscribed
        self._log("info", f"lossless: {owner[1].rstrip('/')}/{owner[0]} acknowledges "
                  f"{', '.join(sorted(subscribed))} (count {self._consumed})")
        return int(self._consumed)

    # ------------------------------------------------------------------ playing
    def play(self) -> PlayReport:
        """Play the bag (and loop if asked); returns what was done."""
        start = time.monotonic()
        opts = self.options
        baseline = self._connect_lossless() if opts.lossless else 0
        sent = 0
        first = self.bag.time_range_ns()
        if first is None:
            raise BagError(f"{self.bag.path} holds no messages")
        begin_ns = first[0] + round(opts.start_offset_s * 1e9)
        self._publish_latched()
        streamed = [t for t, (_, latched, _) in self._publishers.items() if not latched]
        while not self._stop:
            clock_origin: tuple[float, int] | None = None
            for message in self.bag.messages(streamed, start_ns=begin_ns):
                if self._stop:
                    break
                publisher = self._publishers[message.topic][0]
                clock_origin = self._wait_until(message, clock_origin)
                if self._clock is not None:
                    self._clock.publish(Clock(clock=stamp_from_ns(message.log_ns)))
                publisher.publish(message.raw)
                self.report.published += 1
                if message.topic in self._acked_topics:
                    sent += 1
                    waited = self._wait_ack(baseline + sent, message)
                    self.report.waited_s += waited
                    if clock_origin is not None:
                        clock_origin = (clock_origin[0] + waited, clock_origin[1])
                    self.report.acknowledged = sent
                self._spin_once(0.0)
            self.report.loops += 1
            if not opts.loop:
                break
        self.report.stopped = self._stop
        self.report.wall_s = time.monotonic() - start
        return self.report

    def _publish_latched(self) -> None:
        """Latched topics before everything else, so late joiners and the first images
        find /tf_static (their messages before the start offset included)."""
        latched = [t for t, (_, is_latched, _) in self._publishers.items() if is_latched]
        for message in self.bag.messages(latched):
            self._publishers[message.topic][0].publish(message.raw)
            self.report.published += 1

    def _wait_until(self, message: BagMessage, origin: tuple[float, int] | None
                    ) -> tuple[float, int]:
        """Sleep (spinning, advancing /clock) until ``message`` is due."""
        now = time.monotonic()
        if origin is None or self.options.rate == 0:
            return (now, message.log_ns)
        wall0, bag0 = origin
        due = wall0 + (message.log_ns - bag0) / 1e9 / self.options.rate
        tick = 1.0 / self.options.clock_rate
        next_tick = time.monotonic() + tick
        while (remaining := due - time.monotonic()) > 0 and not self._stop:
            self._spin_once(max(0.0, min(next_tick - time.monotonic(), remaining)))
            if self._clock is not None and time.monotonic() >= next_tick:
                next_tick += tick
                elapsed = (time.monotonic() - wall0) * self.options.rate
                bag_now = min(bag0 + round(elapsed * 1e9), message.log_ns)
                self._clock.publish(Clock(clock=stamp_from_ns(bag_now)))
        if due < now - 1.0:
            # Far behind (a slow subscriber or a paused process): restart the schedule here.
            return (now, message.log_ns)
        return origin

    def _wait_ack(self, target: int, message: BagMessage) -> float:
        start = time.monotonic()
        while (self._consumed or 0) < target:
            if self._stop:
                break
            if time.monotonic() - start > self.options.ack_timeout_s:
                raise BagError(
                    f"the node acknowledged {self._consumed} of {target} images within "
                    f"{self.options.ack_timeout_s:.0f} s (waiting on {message.topic} at "
                    f"{message.log_ns}): is it still running? With input_qos:=sensor_data a "
                    "frame can be lost; start it with input_qos:=reliable, or raise "
                    "--ack-timeout for a slow first model load"
                )
            self._spin_once(0.01)
        return time.monotonic() - start
