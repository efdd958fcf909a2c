"""``LoopCloser``: keyframes in, a globally consistent keyframe map out (ROS-free).

Per reconstructed window, :meth:`LoopCloser.add_window` makes the window's newest
snapshot a keyframe node with its chained world pose (the window's placement), adds a
``window`` edge to every earlier node whose snapshot the window also holds (measured by
aligning those shared views, weighted by their residuals), retrieves look-alike keyframes
from the place database and queues them. :meth:`LoopCloser.verify_pending` (the caller
runs it in spare cycles, so live output is not delayed) verifies queued candidates, adds
the accepted ones as robust ``loop`` edges and re-optimises; with no loop candidate
waiting, it verifies ``local`` pairs instead: the new keyframe and the recent keyframes
``local_offsets`` before it, which share no window (so no window edge ties them) but see
the same surfaces. Each accepted pair is one more independent measurement of the
trajectory (a fresh model run on the two snapshots), a robust ``local`` edge: the chain's
drift between loops shrinks with the number of such measurements per keyframe, as in a
covisibility graph. :meth:`correction` is
``map_from_world`` at a keyframe (the newest by default); :meth:`trajectory` the corrected
keyframe poses.

A keyframe whose snapshot has a view without a pose (a failed pose fit) is still a node
(its chained pose keeps the graph connected) but is neither a loop candidate nor the end
of a window edge: its geometry is not trusted.

Odometry edges: when the caller gives the reference camera's odometry pose
(``odom_from_camera``, metres, e.g. TF ``odom -> base`` times the camera mount) and the
metres per world unit of the keyframe (the world is metric), and the previous keyframe had
both too, an ``odometry`` edge ties the two: the odometry's relative camera motion in the
nodes' units. Its sigmas grow with the motion (``odometry_rates``: rad per rad turned, m per
m travelled) above ``odometry_min_sigmas``. Without them no odometry edge is added
(:attr:`LoopCounts.odometry_missing`). Shared views too short of depth to measure
the scale give no window edge either (the node is then tied by its chained pose).

Memory: the graph holds a few numbers per node; the heavy part of a keyframe (its images
and depth samples, :class:`~dvlt_core.mapping.verification.Keyframe`) is kept only while
the keyframe is in the place database or among the ``history`` recent nodes, and the
database is bounded by ``places.capacity`` keyframes and ``max_image_bytes`` of images
(beyond, its most redundant keyframe goes). The verdicts kept are the last
``verdict_history``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

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
    pose is all there is); ``max_image_bytes``: keyframe images kept for verification;
    ``verdict_history``: loop verdicts kept (:attr:`LoopCloser.verdicts`; None: all, for
    offline runs that report every loop);
    ``local_offsets``: how many keyframes back the local pairs of a new keyframe reach
    (empty: none; each must be within ``history``); ``odometry_rates``: odometry edge
    sigmas per motion (rotation rad per rad turned, translation m per m travelled);
    ``odometry_min_sigmas``: their floors (rad, m, log scale)."""

    places: PlaceOptions = field(default_factory=PlaceOptions)
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    graph: GraphOptions = field(default_factory=GraphOptions)
    history: int = 8
    max_pending: int = 8
    window_min_sigmas: tuple[float, float, float] = (0.002, 0.005, 0.005)
    unlinked_sigmas: tuple[float, float, float] = (0.1, 1.0, 0.2)
    max_image_bytes: int = 1 << 30
    verdict_history: int | None = 256
    local_offsets: tuple[int, ...] = (2, 3)
    odometry_rates: tuple[float, float] = (0.02, 0.02)
    odometry_min_sigmas: tuple[float, float, float] = (0.002, 0.005, 0.01)

    def __post_init__(self) -> None:
        verdicts = 1 if self.verdict_history is None else self.verdict_history
        if min(self.history, self.max_pending, self.max_image_bytes, verdicts) < 1:
            raise ValueError(f"history, max_pending, max_image_bytes and verdict_history must "
                             f"be >= 1, got {self}")
        if min(self.odometry_rates) < 0 or min(self.odometry_min_sigmas) <= 0:
            raise ValueError(f"odometry rates must be >= 0 and their floors > 0, got {self}")
        if not all(2 <= k <= self.history for k in self.local_offsets):
            raise ValueError(f"local_offsets must be within 2..history, got {self}")


@dataclass
class LoopCounts:
    """What the loop closer did, for diagnostics."""

    keyframes: int = 0
    candidates: int = 0
    verified: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    #: Keyframes left out of place recognition because a view of theirs has no pose.
    without_pose: int = 0
    #: Shared views that gave no window edge (too few depth pixels to measure the scale).
    unmeasured_links: int = 0
    #: Local pairs verified and accepted (not loops: not in the counts above).
    local_verified: int = 0
    local_accepted: int = 0
    #: Odometry edges added, and keyframes after the first without one (no odometry pose
    #: or no metric scale, here or at the previous keyframe).
    odometry_edges: int = 0
    odometry_missing: int = 0
    last_optimisation: Optimisation | None = None


@dataclass(frozen=True)
class _OdometryPose:
    """A keyframe's reference camera in the odometry (metres) and in its node, with the
    node's metres per unit."""

    node: int
    odom_from_camera: np.ndarray
    node_from_camera: Sim3
    metres_per_unit: float


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
        #: Keyframes in the place database or among the recent ones (module docstring).
        self.keyframes: dict[int, Keyframe] = {}
        self._keys: dict[int, tuple[tuple[str, int], ...]] = {}
        self._recent: deque[int] = deque(maxlen=self.options.history)
        self._last: tuple[int, float] | None = None  # newest node and its median depth
        self._odometry: _OdometryPose | None = None  # the newest node's, when it had one
        self._image_bytes = 0
        self.pending: deque[tuple[int, PlaceMatch]] = deque(maxlen=self.options.max_pending)
        self.local_pending: deque[tuple[int, int]] = deque(maxlen=self.options.max_pending)
        self.counts = LoopCounts()
        self.verdicts: deque[LoopVerdict] = deque(maxlen=self.options.verdict_history)

    @property
    def image_bytes(self) -> int:
        """Bytes of the keyframe images kept for verification."""
        return self._image_bytes

    def add_window(
        self,
        keys: Sequence[tuple[str, int]],
        images: Sequence[np.ndarray],
        reconstruction: Reconstruction,
        newest: Sequence[int],
        world_from_window: Sim3,
        intrinsics: Sequence[np.ndarray | None] | None = None,
        odom_from_camera: np.ndarray | None = None,
        metres_per_world_unit: float | None = None,
    ) -> int:
        """Add the window's newest snapshot (views ``newest``) as a keyframe node; ``keys``
        are the window's view keys (camera, stamp ns), ``images`` its RGB images and
        ``intrinsics`` the calibrated K the window was reconstructed with (None: predicted),
        in window order. ``odom_from_camera`` (4x4, metres) is the odometry pose of the
        reference camera (view ``newest[0]``) and ``metres_per_world_unit`` the world's
        scale: with both, here and at the previous keyframe, an odometry edge joins them
        (module docstring). Returns the node id."""
        node = self.counts.keyframes
        stamp = keys[newest[0]][1]
        cameras = tuple(keys[i][0] for i in newest)
        known = None if intrinsics is None else [intrinsics[i] for i in newest]
        keyframe = Keyframe.from_reconstruction(
            node, stamp, cameras, [images[i] for i in newest], reconstruction, newest,
            self.options.verify.grid, known)
        self.graph.add_node(node, world_from_window)
        self.counts.keyframes += 1
        linked = self._link(node, keys, reconstruction)
        depth = median_depth(keyframe.views)
        if not linked and self._last is not None:
            previous, previous_depth = self._last
            chained = self.graph.initial_pose(previous).inverse().compose(world_from_window)
            rot, trans, scale = self.options.unlinked_sigmas
            self.graph.add_edge(previous, node, chained,
                                EdgeSigmas(rot, trans * previous_depth, scale))
        self._last = (node, depth)
        self._add_odometry(node, reconstruction.views[newest[0]].extrinsics_c2w,
                           world_from_window, odom_from_camera, metres_per_world_unit)
        if all(reconstruction.views[i].pose_valid for i in newest):
            self._keep(node, keyframe, tuple(keys[i] for i in newest), reconstruction, newest)
        else:
            self.counts.without_pose += 1
        self.counts.last_optimisation = self.graph.optimise()
        return node

    def _link(self, node: int, keys: Sequence[tuple[str, int]],
              reconstruction: Reconstruction) -> bool:
        """Window edges from the recent nodes whose views this window also holds."""
        here = {key: i for i, key in enumerate(keys)}
        linked = False
        floors = self.options.window_min_sigmas
        for earlier in self._recent:
            shared = [here.get(k) for k in self._keys[earlier]]
            if None in shared or not all(reconstruction.views[i].pose_valid for i in shared):
                continue
            views = [ViewGeometry.from_view(reconstruction.views[i], self.options.verify.grid)
                     for i in shared]
            alignment = align_views(self.keyframes[earlier].views, views)
            if alignment is None or not alignment.depth_scale:
                self.counts.unmeasured_links += 1
                continue
            depth = median_depth(self.keyframes[earlier].views)
            sigmas = EdgeSigmas(
                max(np.radians(alignment.rotation_max_deg), floors[0]),
                max(alignment.position_rms, floors[1] * depth),
                max(alignment.log_scale_sigma / np.sqrt(alignment.depth_pixels), floors[2]))
            self.graph.add_edge(earlier, node, alignment.target_from_source, sigmas, "window")
            linked = True
        return linked

    def _add_odometry(self, node: int, window_from_camera: np.ndarray, world_from_window: Sim3,
                      odom_from_camera: np.ndarray | None,
                      metres_per_world_unit: float | None) -> None:
        """The odometry edge from the previous keyframe (module docstring)."""
        previous, self._odometry = self._odometry, None
        if (odom_from_camera is not None and metres_per_world_unit is not None
                and np.isfinite(metres_per_world_unit) and metres_per_world_unit > 0):
            self._odometry = _OdometryPose(
                node, np.asarray(odom_from_camera, np.float64),
                Sim3.from_rigid(window_from_camera),
                float(world_from_window.scale) * metres_per_world_unit)
        if node == 0:
            return
        if previous is None or self._odometry is None or previous.node != node - 1:
            self.counts.odometry_missing += 1
            return
        here = self._odometry
        motion = np.linalg.inv(previous.odom_from_camera) @ here.odom_from_camera  # metres
        units = previous.metres_per_unit
        camera_a_from_b = Sim3(motion[:3, :3], motion[:3, 3] / units,
                               here.metres_per_unit / units)
        a_from_b = previous.node_from_camera.compose(camera_a_from_b).compose(
            here.node_from_camera.inverse())
        cos = np.clip((np.trace(motion[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
        rot_rate, trans_rate = self.options.odometry_rates
        rot_floor, trans_floor, scale_sigma = self.options.odometry_min_sigmas
        sigmas = EdgeSigmas(
            max(rot_rate * float(np.arccos(cos)), rot_floor),
            max(trans_rate * float(np.linalg.norm(motion[:3, 3])), trans_floor) / units,
            scale_sigma)
        self.graph.add_edge(previous.node, node, a_from_b, sigmas, "odometry")
        self.counts.odometry_edges += 1

    def _keep(self, node: int, keyframe: Keyframe, keys: tuple[tuple[str, int], ...],
              reconstruction: Reconstruction, newest: Sequence[int]) -> None:
        """A keyframe with poses: recent (window edges) and, with a descriptor, a place."""
        if len(self._recent) == self._recent.maxlen:
            self._forget_unless_kept(self._recent[0], recent_too=True)
        self.keyframes[node] = keyframe
        self._image_bytes += keyframe.image_bytes
        self._keys[node] = keys
        self._recent.append(node)
        self.local_pending.extend((node, node - k) for k in self.options.local_offsets
                                  if node - k in self._recent)
        descriptor = self._descriptor(reconstruction, newest, keyframe.images)
        if descriptor is not None:
            for match in self.places.query(keyframe.stamp_ns, descriptor):
                self.pending.append((node, match))
                self.counts.candidates += 1
            for evicted in self.places.add(node, keyframe.stamp_ns, descriptor):
                self._forget_unless_kept(evicted)
        while self._image_bytes > self.options.max_image_bytes and len(self.places) > 1:
            self._forget_unless_kept(self.places.evict())

    def _forget_unless_kept(self, node: int, recent_too: bool = False) -> None:
        """Drop a keyframe's images and geometry once neither the place database nor the
        recent nodes (unless ``recent_too``: it is leaving them) hold it."""
        if node in self.places or (not recent_too and node in self._recent):
            return
        keyframe = self.keyframes.pop(node, None)
        if keyframe is not None:
            self._image_bytes -= keyframe.image_bytes
        self._keys.pop(node, None)

    @property
    def has_pending(self) -> bool:
        """Whether a loop candidate or a local pair waits for verification."""
        return bool(self.pending or self.local_pending)

    def verify_pending(self, limit: int = 1) -> list[LoopVerdict]:
        """Verify up to ``limit`` queued loop candidates (newest first), then local pairs;
        accepted ones become ``loop`` / ``local`` edges and the graph is re-optimised."""
        verdicts = []
        while len(verdicts) < limit and self.has_pending:
            if self.pending:
                node, match = self.pending.pop()
                other, kind = match.keyframe, "loop"
            else:
                (node, other), kind = self.local_pending.pop(), "local"
            if other not in self.keyframes or node not in self.keyframes:
                continue
            predicted = self.graph.pose(node).inverse().compose(self.graph.pose(other))
            verdict = verify_loop(self.reconstructor, self.keyframes[node],
                                  self.keyframes[other], predicted, self.options.verify)
            verdict = replace(verdict, kind=kind)
            self._count(verdict)
            if verdict.accepted:
                self.graph.add_edge(node, other, verdict.current_from_candidate,
                                    verdict.sigmas, kind)
            verdicts.append(verdict)
        if any(v.accepted for v in verdicts):
            self.counts.last_optimisation = self.graph.optimise()
        self.verdicts.extend(v for v in verdicts if v.kind == "loop")
        return verdicts

    def _count(self, verdict: LoopVerdict) -> None:
        counts = self.counts
        if verdict.kind == "local":
            counts.local_verified += 1
            counts.local_accepted += verdict.accepted
            return
        counts.verified += 1
        if verdict.accepted:
            counts.accepted += 1
        else:
            counts.refused[verdict.reason] = counts.refused.get(verdict.reason, 0) + 1

    def correction(self, node: int | None = None) -> Sim3:
        """``map_from_world`` at ``node`` (the newest keyframe when None; identity before
        the first)."""
        if node is None:
            if self._last is None:
                return Sim3()
            node = self._last[0]
        return self.graph.correction(node)

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
