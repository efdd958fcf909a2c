"""``LoopCloser``: keyframes in, a globally consistent keyframe map out (ROS-free).

Per reconstructed window, :meth:`LoopCloser.add_window` makes the window's newest
snapshot a keyframe node with its chained world pose (the window's placement), adds a
``window`` edge to every earlier node whose snapshot the window also holds (measured by
aligning those shared views, weighted by their residuals), retrieves look-alike keyframes
from the place database and queues them. :meth:`LoopCloser.verify_pending` (the caller
runs it in spare cycles, so live output is not delayed) verifies queued candidates, adds
the accepted ones as robust ``loop`` edges and re-optimises. :meth:`correction` is
``map_from_world`` at the newest keyframe; :meth:`trajectory` the corrected keyframe poses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dvlt_core.geometry import Sim3
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping.alignment import ViewGeometry, align_views, median_depth
from dvlt_core.mapping.places import PlaceDatabase, PlaceMatch, PlaceOptions
from dvlt_core.mapping.pose_graph import EdgeSigmas, GraphOptions, Optimisation, PoseGraph
from dvlt_core.mapping.verification import Keyframe, LoopVerdict, VerifyOptions, verify_loop
from dvlt_core.result import Reconstruction

Describer = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class LoopOptions:
    """``history``: recent nodes searched for views shared with a new window;
    ``max_pending``: queued candidates (oldest dropped); ``window_min_sigmas``: floors of
    window edges (rotation rad, translation as a fraction of the median depth, log
    scale); ``unlinked_sigmas``: the same for a node that shares no view (its chained
    pose is all there is)."""

    places: PlaceOptions = field(default_factory=PlaceOptions)
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    graph: GraphOptions = field(default_factory=GraphOptions)
    history: int = 8
    max_pending: int = 8
    window_min_sigmas: tuple[float, float, float] = (0.002, 0.005, 0.005)
    unlinked_sigmas: tuple[float, float, float] = (0.1, 1.0, 0.2)


@dataclass
class LoopCounts:
    """What the loop closer did, for diagnostics."""

    keyframes: int = 0
    candidates: int = 0
    verified: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    last_optimisation: Optimisation | None = None


class LoopCloser:
    """Keyframe graph, place database and verification queue (module docstring).

    ``reconstructor``: the one that made the windows (verification reruns it);
    ``describer``: descriptors of a snapshot's images when the reconstruction carries none
    (a backend without an encoder); without either, no places are recognised.
    """

    def __init__(self, reconstructor: Reconstructor, describer: Describer | None = None,
                 options: LoopOptions | None = None) -> None:
        self.options = options or LoopOptions()
        self.reconstructor = reconstructor
        self.describer = describer
        self.graph = PoseGraph(self.options.graph)
        self.places = PlaceDatabase(self.options.places)
        self.keyframes: dict[int, Keyframe] = {}
        self._keys: dict[int, tuple[tuple[str, int], ...]] = {}
        self._recent: deque[int] = deque(maxlen=self.options.history)
        self.pending: deque[tuple[int, PlaceMatch]] = deque(maxlen=self.options.max_pending)
        self.counts = LoopCounts()
        self.verdicts: list[LoopVerdict] = []

    def add_window(
        self,
        keys: Sequence[tuple[str, int]],
        images: Sequence[np.ndarray],
        reconstruction: Reconstruction,
        newest: Sequence[int],
        world_from_window: Sim3,
    ) -> int:
        """Add the window's newest snapshot (views ``newest``) as a keyframe node; ``keys``
        are the window's view keys (camera, stamp ns) and ``images`` its RGB images, in
        window order. Returns the node id."""
        node = self.counts.keyframes
        stamp = keys[newest[0]][1]
        cameras = tuple(keys[i][0] for i in newest)
        keyframe = Keyframe.from_reconstruction(
            node, stamp, cameras, [images[i] for i in newest], reconstruction, newest,
            self.options.verify.grid)
        self.graph.add_node(node, world_from_window)
        here = {key: i for i, key in enumerate(keys)}
        linked = False
        for earlier in self._recent:
            shared = [here.get(k) for k in self._keys[earlier]]
            if None in shared or not all(reconstruction.views[i].pose_valid for i in shared):
                continue
            views = [ViewGeometry.from_view(reconstruction.views[i], self.options.verify.grid)
                     for i in shared]
            alignment = align_views(self.keyframes[earlier].views, views)
            if alignment is None:
                continue
            depth = median_depth(self.keyframes[earlier].views)
            floors = self.options.window_min_sigmas
            sigmas = EdgeSigmas(
                max(np.radians(alignment.rotation_max_deg), floors[0]),
                max(alignment.position_rms, floors[1] * depth),
                max(alignment.log_scale_sigma / np.sqrt(max(alignment.depth_pixels, 1)),
                    floors[2]))
            self.graph.add_edge(earlier, node, alignment.target_from_source, sigmas, "window")
            linked = True
        if not linked and self._recent:
            previous = self._recent[-1]
            chained = self.graph.initial_pose(previous).inverse().compose(world_from_window)
            rot, trans, scale = self.options.unlinked_sigmas
            depth = median_depth(self.keyframes[previous].views)
            self.graph.add_edge(previous, node, chained, EdgeSigmas(rot, trans * depth, scale))
        self.keyframes[node] = keyframe
        self._keys[node] = tuple(keys[i] for i in newest)
        self._recent.append(node)
        self.counts.keyframes += 1
        descriptor = self._descriptor(reconstruction, newest, keyframe.images)
        if descriptor is not None:
            for match in self.places.query(stamp, descriptor):
                self.pending.append((node, match))
                self.counts.candidates += 1
            self.places.add(node, stamp, descriptor)
        self.counts.last_optimisation = self.graph.optimise()
        return node

    def verify_pending(self, limit: int = 1) -> list[LoopVerdict]:
        """Verify up to ``limit`` queued candidates (newest first); accepted ones become
        loop edges and the graph is re-optimised."""
        verdicts = []
        while self.pending and len(verdicts) < limit:
            node, match = self.pending.pop()
            if match.keyframe not in self.keyframes:
                continue
            predicted = self.graph.pose(node).inverse().compose(self.graph.pose(match.keyframe))
            verdict = verify_loop(self.reconstructor, self.keyframes[node],
                                  self.keyframes[match.keyframe], predicted, self.options.verify)
            self.counts.verified += 1
            if verdict.accepted:
                self.counts.accepted += 1
                self.graph.add_edge(node, match.keyframe, verdict.current_from_candidate,
                                    verdict.sigmas, "loop")
            else:
                refused = self.counts.refused
                refused[verdict.reason] = refused.get(verdict.reason, 0) + 1
            verdicts.append(verdict)
        if any(v.accepted for v in verdicts):
            self.counts.last_optimisation = self.graph.optimise()
        self.verdicts.extend(verdicts)
        return verdicts

    def correction(self) -> Sim3:
        """``map_from_world`` at the newest keyframe (identity before the first)."""
        return self.graph.correction(self._recent[-1]) if self._recent else Sim3()

    def trajectory(self) -> dict[int, Sim3]:
        """Corrected ``map_from_node`` of every keyframe."""
        return self.graph.poses()

    def _descriptor(self, reconstruction: Reconstruction, newest: Sequence[int],
                    images: Sequence[np.ndarray]) -> np.ndarray | None:
        if reconstruction.descriptors is not None:
            return reconstruction.descriptors[list(newest)]
        if self.describer is not None:
            return self.describer(images)
        return None
