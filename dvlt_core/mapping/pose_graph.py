"""The keyframe pose graph: Sim(3) (SE(3) when metric) nodes, relative edges, GTSAM.

Each node is a keyframe's ``world_from_node`` (the placement of the window in which the
keyframe was the newest snapshot: the node frame is that window's frame and unit). An edge
``a -> b`` measures ``a_from_b = X_a⁻¹ · X_b`` with standard deviations on the tangent space
(:class:`EdgeSigmas`: rotation in radians, translation in node ``a``'s unit, log scale).
Edges of kind ``"window"`` (consecutive windows, from their shared views) and
``"odometry"`` are trusted as Gaussian; ``"loop"`` edges and ``"local"`` ones (verified
pairs of nearby keyframes) go through a robust kernel (Cauchy by default), so one wrong
closure is down-weighted instead of bending the map. The
first node carries a tight prior (the gauge).

A robust kernel acts on an edge's own whitened residual, but before a loop is closed the
chain has drifted, so even a true loop disagrees with the current estimate by the drift
accumulated between its two nodes: with a fixed width of one standard deviation every
first closure would be ignored. The kernel width of a loop edge is therefore
``kernel_width`` times the expected disagreement in the loop's own standard deviations:
per component, ``sqrt(1 + var_chain / sigma_loop²)``, where ``var_chain`` sums the
variances of the window edges between the two nodes (rotation, log scale) and, for
translation, adds the lever arm of the accumulated rotation error over the path length
(``var_rot · L² / 3``). A false loop, metres off, stays far outside that width; a true one
pulls.

:meth:`PoseGraph.optimise` runs GTSAM's ISAM2 incrementally: each call adds the new nodes
and edges and relinearises what they touch (only the part of the tree an update reached is
checked for relinearisation); a loop edge relinearises the loop, and ``extra_iterations``
more updates let the robust kernel settle. Those extra updates stop once the call has taken
``budget_ms``; the rest are owed, and each later call's own update counts as one of them
(each cycle calls :meth:`optimise`), so a cycle's optimisation time stays bounded on a
loaded CPU and the estimate goes through the same updates, only later. Values are kept in
GTSAM's Similarity3 (``p ↦ s·(R·p + t)``) and converted to
:class:`~dvlt_core.geometry.Sim3` (``p ↦ s·R·p + t``) only for the nodes asked for
(:meth:`pose`), once per update, so a cycle does not convert the whole graph.

GTSAM is an optional dependency (``pip install 'dvlt_ros[mapping]'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dvlt_core.geometry import Sim3

EDGE_KINDS = ("window", "odometry", "loop", "local")
ROBUST_KINDS = ("loop", "local")
ROBUST_KERNELS = ("cauchy", "huber")


def _gtsam() -> Any:
    try:
        import gtsam
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "loop closure needs GTSAM: pip install 'dvlt_ros[mapping]' (the gtsam wheel)"
        ) from error
    return gtsam


@dataclass(frozen=True)
class EdgeSigmas:
    """Standard deviations of one edge: ``rotation`` (rad), ``translation`` (node ``a``'s
    unit), ``log_scale`` (ignored when the graph is metric)."""

    rotation: float
    translation: float
    log_scale: float = 0.01

    def __post_init__(self) -> None:
        values = (self.rotation, self.translation, self.log_scale)
        if not all(np.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"edge sigmas must be finite and > 0, got {self}")


@dataclass(frozen=True)
class GraphOptions:
    """``metric``: SE(3) nodes (scale fixed to 1); ``loop_kernel`` and ``kernel_width``
    (in standard deviations) of loop edges; ``extra_iterations``: ISAM2 updates after a
    loop edge; ``budget_ms``: the time after which one :meth:`PoseGraph.optimise` defers
    the extra updates still owed to the next calls; ``prior_sigma``: of the first node's
    prior."""

    metric: bool = False
    loop_kernel: str = "cauchy"
    kernel_width: float = 1.0
    extra_iterations: int = 3
    budget_ms: float = 20.0
    prior_sigma: float = 1e-6

    def __post_init__(self) -> None:
        if self.loop_kernel not in ROBUST_KERNELS:
            raise ValueError(
                f"loop_kernel must be one of {ROBUST_KERNELS}, got {self.loop_kernel!r}")
        if not (self.kernel_width > 0 and self.prior_sigma > 0 and self.budget_ms > 0
                and self.extra_iterations >= 0):
            raise ValueError(
                f"kernel_width, budget_ms and prior_sigma must be > 0, iterations >= 0: {self}")


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    a_from_b: Sim3
    sigmas: EdgeSigmas
    kind: str


@dataclass(frozen=True)
class Optimisation:
    """One :meth:`PoseGraph.optimise`: nodes and edges in the graph, loop edges, the
    wall-clock milliseconds, and the extra updates still owed (deferred by the budget)."""

    nodes: int
    edges: int
    loops: int
    ms: float
    owed_iterations: int = 0


class PoseGraph:
    """Keyframe nodes and relative edges, optimised incrementally (module docstring)."""

    def __init__(self, options: GraphOptions | None = None) -> None:
        self.options = options or GraphOptions()
        gtsam = _gtsam()
        self._g = gtsam
        params = gtsam.ISAM2Params()
        params.setRelinearizeThreshold(0.01)
        params.relinearizeSkip = 1
        params.enablePartialRelinearizationCheck = True
        self._isam = gtsam.ISAM2(params)
        self._new_factors = gtsam.NonlinearFactorGraph()
        self._new_values = gtsam.Values()
        self._initial: dict[int, Sim3] = {}
        # Poses converted from ISAM2 since its last update (the rest on demand).
        self._estimate: dict[int, Sim3] = {}
        self._unoptimised: set[int] = set()
        self.edges: list[Edge] = []
        self._loops = 0
        self._owed = 0  # extra ISAM2 updates still to run after the last loop edge
        self._loop_added = False
        # Per node, in insertion order: cumulative window-edge variances and path length
        # from the first node (rotation, translation, log scale, length).
        self._order: dict[int, int] = {}
        self._chain: list[np.ndarray] = []

    # ------------------------------------------------------------------ building
    def __len__(self) -> int:
        return len(self._initial)

    def __contains__(self, node: int) -> bool:
        return node in self._initial

    @property
    def nodes(self) -> list[int]:
        return list(self._initial)

    def add_node(self, node: int, world_from_node: Sim3) -> None:
        """A keyframe with its current (chained) pose; the first one is the gauge."""
        if node in self._initial:
            raise ValueError(f"node {node} is already in the graph")
        pose = self._fix_scale(world_from_node)
        value = self._to_gtsam(pose)
        self._new_values.insert(node, value)
        if not self._initial:
            dims = 6 if self.options.metric else 7
            noise = self._g.noiseModel.Isotropic.Sigma(dims, self.options.prior_sigma)
            self._new_factors.add(self._prior(node, value, noise))
        self._initial[node] = pose
        self._unoptimised.add(node)
        self._order[node] = len(self._chain)
        self._chain.append(self._chain[-1].copy() if self._chain else np.zeros(4))

    def add_edge(self, a: int, b: int, a_from_b: Sim3, sigmas: EdgeSigmas,
                 kind: str = "window") -> None:
        """An edge measuring ``a_from_b`` (nodes must exist)."""
        if kind not in EDGE_KINDS:
            raise ValueError(f"kind must be one of {EDGE_KINDS}, got {kind!r}")
        if a not in self._initial or b not in self._initial or a == b:
            raise ValueError(f"edge {a} -> {b} needs two distinct existing nodes")
        measured = self._fix_scale(a_from_b)
        sig = [sigmas.rotation] * 3 + [sigmas.translation] * 3
        if not self.options.metric:
            sig.append(sigmas.log_scale)
        noise = self._g.noiseModel.Diagonal.Sigmas(np.array(sig, dtype=np.float64))
        if kind in ROBUST_KINDS:
            g = self._g.noiseModel.mEstimator
            kernel = (g.Cauchy if self.options.loop_kernel == "cauchy" else g.Huber).Create(
                self.options.kernel_width * self.expected_disagreement(a, b, sigmas))
            noise = self._g.noiseModel.Robust.Create(kernel, noise)
        if kind == "loop":  # a local edge agrees with the estimate: no extra updates
            self._owed = self.options.extra_iterations
            self._loop_added = True
            self._loops += 1
        elif kind == "window" and self._order[b] == self._order[a] + 1 == len(self._chain) - 1:
            step = np.array([sigmas.rotation**2, sigmas.translation**2, sigmas.log_scale**2,
                             float(np.linalg.norm(measured.translation))])
            self._chain[-1] = self._chain[-2] + step
        self._new_factors.add(self._between(a, b, self._to_gtsam(measured), noise))
        self.edges.append(Edge(a, b, measured, sigmas, kind))

    def expected_disagreement(self, a: int, b: int, sigmas: EdgeSigmas) -> float:
        """How many of the loop's standard deviations a true loop ``a -> b`` may disagree
        with the chained estimate (the module docstring), at least 1."""
        low, high = sorted((self._order[a], self._order[b]))
        rot, trans, scale, length = self._chain[high] - self._chain[low]
        trans = trans + rot * length**2 / 3.0
        ratios = [rot / sigmas.rotation**2, trans / sigmas.translation**2]
        if not self.options.metric:
            ratios.append(scale / sigmas.log_scale**2)
        return float(np.sqrt(1.0 + max(ratios)))

    # ------------------------------------------------------------------ solving
    def optimise(self) -> Optimisation:
        """Add what is new to ISAM2 and update, then run owed extra updates within
        ``budget_ms``; returns the counts and timing."""
        start = time.perf_counter()
        self._isam.update(self._new_factors, self._new_values)
        if self._owed and not self._loop_added:
            self._owed -= 1  # this update is one of the owed ones
        self._loop_added = False
        budget_s = self.options.budget_ms * 1e-3
        while self._owed and time.perf_counter() - start < budget_s:
            self._isam.update()
            self._owed -= 1
        self._new_factors = self._g.NonlinearFactorGraph()
        self._new_values = self._g.Values()
        self._unoptimised.clear()
        self._estimate.clear()
        ms = (time.perf_counter() - start) * 1e3
        return Optimisation(len(self._initial), len(self.edges), self._loops, ms, self._owed)

    def pose(self, node: int) -> Sim3:
        """The latest optimised ``world_from_node`` (the chained pose before any
        optimisation)."""
        if node in self._unoptimised:
            return self._initial[node]
        pose = self._estimate.get(node)
        if pose is None:
            pose = self._estimate[node] = self._estimate_of(node)
        return pose

    def initial_pose(self, node: int) -> Sim3:
        """The pose the node was added with."""
        return self._initial[node]

    def poses(self) -> dict[int, Sim3]:
        return {node: self.pose(node) for node in self._initial}

    def correction(self, node: int) -> Sim3:
        """``map_from_world`` at ``node``: optimised pose ∘ chained pose⁻¹. Applied to
        what the chain places in the world near ``node`` (the newest keyframe: the live
        output), it gives the corrected map frame."""
        return self.pose(node).compose(self._initial[node].inverse())

    def error(self) -> float:
        """The graph's weighted error at the current estimate (robust kernels applied);
        visits every factor."""
        return float(self._isam.getFactorsUnsafe().error(self._isam.calculateEstimate()))

    def edge_residuals(self, kind: str = "loop") -> list[tuple[Edge, float]]:
        """Each edge of ``kind`` with its whitened residual norm at the current estimate
        (in standard deviations; a rejected loop stands out by its size)."""
        out = []
        for edge in self.edges:
            if edge.kind != kind:
                continue
            predicted = self.pose(edge.a).inverse().compose(self.pose(edge.b))
            delta = self._to_gtsam(edge.a_from_b).localCoordinates(self._to_gtsam(predicted))
            s = edge.sigmas
            sig = np.array([s.rotation] * 3 + [s.translation] * 3
                           + ([] if self.options.metric else [s.log_scale]))
            out.append((edge, float(np.linalg.norm(np.asarray(delta) / sig))))
        return out

    # ------------------------------------------------------------------ conversions
    def _fix_scale(self, sim: Sim3) -> Sim3:
        return Sim3(np.asarray(sim.rotation, np.float64), np.asarray(sim.translation, np.float64),
                    1.0 if self.options.metric else float(sim.scale))

    def _to_gtsam(self, sim: Sim3) -> Any:
        rotation = self._g.Rot3(np.asarray(sim.rotation, dtype=np.float64))
        translation = np.asarray(sim.translation, dtype=np.float64)
        if self.options.metric:
            return self._g.Pose3(rotation, translation)
        return self._g.Similarity3(rotation, translation / float(sim.scale), float(sim.scale))

    def _estimate_of(self, node: int) -> Sim3:
        if self.options.metric:
            pose = self._isam.calculateEstimatePose3(node)
            return Sim3(pose.rotation().matrix(), np.asarray(pose.translation()), 1.0)
        sim = self._isam.calculateEstimateSimilarity3(node)
        scale = float(sim.scale())
        return Sim3(sim.rotation().matrix(), scale * np.asarray(sim.translation()), scale)

    def _prior(self, node: int, value: Any, noise: Any) -> Any:
        g = self._g
        factor = g.PriorFactorPose3 if self.options.metric else g.PriorFactorSimilarity3
        return factor(node, value, noise)

    def _between(self, a: int, b: int, value: Any, noise: Any) -> Any:
        g = self._g
        factor = g.BetweenFactorPose3 if self.options.metric else g.BetweenFactorSimilarity3
        return factor(a, b, value, noise)

