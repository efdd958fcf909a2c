"""One rclpy context and executor per test, with helpers to wait and to collect topics."""

from __future__ import annotations

import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from dvlt_ros.bags.player import BagPlayer, PlayOptions
from dvlt_ros.nodes.reconstruct_node import ReconstructNode

RELIABLE_DEPTH = 10


class Graph:
    """Nodes of one test, spun together by one executor (the player spins it too)."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = []
        self.player_node = self.node("dvlt_replay")
        self.listener = self.node("listener")
        self.received: dict[str, list] = {}

    def add(self, node):
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def node(self, name: str):
        return self.add(rclpy.create_node(name, context=self.context))

    def reconstruct_node(self, backend, **params) -> ReconstructNode:
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        return self.add(ReconstructNode(backend=backend, context=self.context,
                                        parameter_overrides=overrides))

    def spin_once(self, timeout: float) -> None:
        self.executor.spin_once(timeout_sec=timeout)

    def spin_until(self, condition, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while not condition() and time.monotonic() < end:
            self.spin_once(0.02)
        return bool(condition())

    def listen(self, kind, topic: str, qos=RELIABLE_DEPTH) -> list:
        """Keep every message of ``topic`` in the returned list."""
        store = self.received.setdefault(topic, [])
        self.listener.create_subscription(kind, topic, store.append, qos)
        return store

    def player(self, bag, **options) -> BagPlayer:
        return BagPlayer(self.player_node, bag, PlayOptions(**options), self.spin_once)

    def close(self) -> None:
        for node in self.nodes:
            node.destroy_node()
        self.executor.shutdown()
        rclpy.shutdown(context=self.context)
