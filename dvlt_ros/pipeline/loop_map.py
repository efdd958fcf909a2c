"""The session's loop closure: every window a keyframe, loops closed in spare time, the
graph's correction applied to what is published (docs/world_frame.md "Loop closure").

:class:`LoopMap` wraps a :class:`~dvlt_core.mapping.loop_closer.LoopCloser` for one world
epoch. :meth:`LoopMap.add` makes a cycle's newest snapshot a keyframe node and adds its
points to the map cloud (a :class:`~dvlt_ros.pipeline.accumulate.FusedCloud` labelled by
keyframe) at the keyframe's corrected place; :meth:`LoopMap.close_loops` verifies queued
candidates and, after an accepted loop, moves every keyframe's points by the change of its
correction. The correction of node ``n`` is ``C_n = map_from_node · world_from_node⁻¹``
(optimised pose after chained pose): it takes the chained world frame to the map frame.

Place descriptors come with the reconstruction (the torch backend's encoder) or from the
``describer`` (a model's encoder run on the keyframe images); with neither, or without
GTSAM, the map reports ``loop_closure_unavailable`` once and stays off.

Memory: with ``keep_all`` (``dvlt-ros process``, which writes every keyframe's cameras)
every keyframe's camera poses are kept; otherwise (the live node) only the reference
camera's poses of the last ``path_length`` keyframes (the corrected path) and of the
keyframes of the loops still drawn. A keyframe's correction is remembered only while it
has points in the map cloud (itself bounded by its voxel cap).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from dvlt_core.geometry import Sim3, chordal_mean
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping.loop_closer import Describer, LoopCloser, LoopOptions
from dvlt_core.mapping.verification import LoopVerdict
from dvlt_ros.pipeline.accumulate import FusedCloud
from dvlt_ros.pipeline.engine import CycleResult
from dvlt_ros.pipeline.events import Level, PipelineEvent
from dvlt_ros.pipeline.products import CloudConfig, build_cloud
from dvlt_ros.pipeline.window import ViewWindow

UNAVAILABLE = "loop_closure_unavailable"
#: A keyframe whose correction changed by less than this (rotation rad, translation in
#: world units relative to 1, log scale) keeps its points where they are.
MOVE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class LoopStats:
    """Counts and timings of the map so far (for the cycle report and diagnostics):
    ``state`` on, off or unavailable; ``add_ms`` the last keyframe's graph update,
    ``verify_ms`` the last verification batch, ``optimise_ms`` the last optimisation;
    ``odometry_edges``: keyframes tied to their predecessor by TF odometry."""

    state: str = "off"
    keyframes: int = 0
    candidates: int = 0
    verified: int = 0
    accepted: int = 0
    rejected: int = 0
    odometry_edges: int = 0
    add_ms: float = 0.0
    verify_ms: float = 0.0
    optimise_ms: float = 0.0


@dataclass(frozen=True)
class KeyframePoses:
    """A keyframe's cameras: (camera, stamp ns, world_from_camera 4x4) in the chained world
    as its own window placed them; ``seen_again``: (node, camera, world_from_camera) of the
    same images in the later windows that held them (placed by that node's window)."""

    node: int
    poses: tuple[tuple[str, int, np.ndarray], ...]
    seen_again: list[tuple[int, str, np.ndarray]] = field(default_factory=list)

    def corrected(self, camera: str, correction: Callable[[int], Sim3]) -> np.ndarray | None:
        """``camera``'s map pose: the mean (chordal for the rotation) of its corrected
        poses in every window that reconstructed the image; None without that camera."""
        own = [(self.node, p) for c, _, p in self.poses if c == camera]
        if not own:
            return None
        seen = own + [(n, p) for n, c, p in self.seen_again if c == camera]
        poses = np.stack([correction(n).apply_c2w(p) for n, p in seen])
        if len(poses) == 1:
            return poses[0]
        out = np.eye(4)
        out[:3, :3] = chordal_mean(poses[:, :3, :3])
        out[:3, 3] = poses[:, :3, 3].mean(axis=0)
        return out


def correction_tf(correction: Sim3, anchor_position: np.ndarray) -> np.ndarray:
    """The rigid ``map_from_world`` (4x4) that TF can carry for a similarity correction:
    its rotation, with the translation that maps ``anchor_position`` (the newest camera's
    position in the world) exactly where the similarity does. Equal to the correction when
    its scale is 1."""
    rotation = np.asarray(correction.rotation, np.float64)
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = correction.apply_points(anchor_position) - rotation @ anchor_position
    return out


class LoopMap:
    """Keyframe graph, map cloud and corrected trajectory of one world epoch (module
    docstring). ``cloud_config``: which points of a window go into the map;
    ``known_intrinsics``: whether the windows were reconstructed with the frames'
    calibrated K (verification then uses it too); ``path_length``: keyframes of the
    corrected path; ``keep_all``: keep every keyframe's camera poses and every loop
    verdict."""

    def __init__(self, reconstructor: Reconstructor, epoch: int, cloud: FusedCloud,
                 cloud_config: CloudConfig, describer: Describer | None = None,
                 options: LoopOptions | None = None, *, known_intrinsics: bool = False,
                 path_length: int = 2000, keep_all: bool = False) -> None:
        self.epoch = epoch
        self.cloud = cloud
        self.cloud_config = cloud_config
        if keep_all:  # offline: every loop verdict is reported
            options = replace(options or LoopOptions(), verdict_history=None)
        self.closer = LoopCloser(reconstructor, describer, options)
        self.known_intrinsics = known_intrinsics
        self.keep_all = keep_all
        #: Keyframe camera poses: all with ``keep_all``, else the last ``path_length``.
        self.keyframes: deque[KeyframePoses] = deque(maxlen=None if keep_all else path_length)
        # Reference camera pose of the keyframes that may still end a loop marker: those
        # the loop closer keeps (possible candidates) and those of the kept verdicts.
        self._reference: dict[int, np.ndarray] = {}
        self._applied: dict[int, Sim3] = {}
        self._add_ms = self._verify_ms = 0.0

    def add(self, window: ViewWindow, result: CycleResult,
            odom_from_camera: np.ndarray | None = None) -> list[PipelineEvent]:
        """Make the window's newest snapshot a keyframe; its points join the map cloud at
        the keyframe's corrected place. ``odom_from_camera``: the reference camera's TF
        odometry pose (metres) at its stamp, which gives an odometry edge when the world is
        metric (docs/world_frame.md "Loop closure"). Events: ``loop_closure_unavailable`` when the
        reconstruction has no descriptors and there is no describer (the caller stops)."""
        recon = result.reconstruction
        if recon.descriptors is None and self.closer.describer is None:
            return [PipelineEvent(
                UNAVAILABLE, Level.WARN,
                f"loop closure is off: backend {self.closer.reconstructor.backend.name!r} gives "
                "no place descriptors and no model encoder is loaded to describe the images "
                "(use the torch backend, or give dvlt-ros process --describe-checkpoint)")]
        start = time.perf_counter()
        newest = [i for i, step in enumerate(window.timesteps) if step == 0]
        world_from_window = result.placement.world_from_window
        intrinsics = None
        if self.known_intrinsics:
            intrinsics = [None if f.info is None else f.info.k for f in window.frames]
        node = self.closer.add_window(window.keys, [f.rgb for f in window.frames], recon,
                                      newest, world_from_window, intrinsics, odom_from_camera,
                                      1.0 if result.placement.metric else None)
        cloud = build_cloud(recon, world_from_window, self.cloud_config, newest)
        if len(cloud.points):
            correction = self.correction(node)
            self._applied[node] = correction
            self.cloud.add(self.epoch, correction.apply_points(
                cloud.points.astype(np.float64)), cloud.colors, cloud.confidence, node)
        poses = result.poses if self.keep_all else result.poses[:1]
        self._seen_again(node, result)
        self.keyframes.append(KeyframePoses(node, tuple(
            (p.camera, p.stamp_ns, p.world_from_camera) for p in poses)))
        if result.poses:
            self._reference[node] = result.poses[0].world_from_camera
            if len(self._reference) > 2 * len(self.closer.keyframes) + 64:
                self._prune_references()
        self._add_ms = (time.perf_counter() - start) * 1e3
        return []

    def _seen_again(self, node: int, result: CycleResult) -> None:
        """Record the window's poses of images that earlier keyframes hold."""
        placed = {(p.camera, p.stamp_ns): p.world_from_camera for p in result.window_poses}
        oldest = min((p.stamp_ns for p in result.window_poses), default=None)
        for keyframe in reversed(self.keyframes):
            if not keyframe.poses or oldest is None or keyframe.poses[0][1] < oldest:
                break
            for camera, stamp, _ in keyframe.poses:
                pose = placed.get((camera, stamp))
                if pose is not None:
                    keyframe.seen_again.append((node, camera, pose))

    def close_loops(self, limit: int) -> list[LoopVerdict]:
        """Verify up to ``limit`` queued loop candidates, then local pairs; after an
        accepted loop, re-place the map cloud. Returns the verdicts."""
        if limit < 1 or not self.closer.has_pending:
            return []
        start = time.perf_counter()
        verdicts = self.closer.verify_pending(limit)
        # Local edges move the map a little: their change is folded in at the next loop.
        if any(v.accepted and v.kind == "loop" for v in verdicts):
            self._replace_cloud()
        self._verify_ms = (time.perf_counter() - start) * 1e3
        return verdicts

    def correction(self, node: int | None = None) -> Sim3:
        """``map_from_world`` at ``node`` (the newest keyframe when None)."""
        return self.closer.correction(node)

    def _replace_cloud(self) -> None:
        moves = {}
        for node, applied in self._applied.items():
            now = self.correction(node)
            delta = now.compose(applied.inverse())
            if not _is_identity(delta):
                moves[node] = delta
                self._applied[node] = now
        if moves:
            self.cloud.move(self.epoch, moves)
            present = set(self.cloud.labels(self.epoch).tolist())
            self._applied = {n: c for n, c in self._applied.items() if n in present}

    def _prune_references(self) -> None:
        wanted = {n for v in self.closer.verdicts if v.accepted for n in (v.current, v.candidate)}
        wanted.update(self.closer.keyframes)
        self._reference = {n: p for n, p in self._reference.items() if n in wanted}

    def corrected_poses(self) -> dict[str, list[tuple[int, np.ndarray]]]:
        """Per camera, (stamp ns, map_from_camera 4x4) of the kept keyframes (every one with
        ``keep_all``; :meth:`KeyframePoses.corrected`), in stamp order."""
        out: dict[str, list[tuple[int, np.ndarray]]] = {}
        for keyframe in self.keyframes:
            for camera, stamp, _ in keyframe.poses:
                out.setdefault(camera, []).append(
                    (stamp, keyframe.corrected(camera, self.correction)))
        for items in out.values():
            items.sort(key=lambda item: item[0])
        return out

    def path(self, camera: str, length: int) -> list[tuple[int, np.ndarray]]:
        """(stamp ns, map_from_camera 4x4) of ``camera`` at the last ``length`` keyframes
        that hold it, in stamp order; only those are corrected."""
        out = []
        for keyframe in reversed(self.keyframes):
            if len(out) >= length:
                break
            stamp = next((s for c, s, _ in keyframe.poses if c == camera), None)
            if stamp is not None:
                out.append((stamp, keyframe.corrected(camera, self.correction)))
        return sorted(out, key=lambda item: item[0])

    def map_from_world_tf(self) -> np.ndarray:
        """The rigid ``map_from_world`` for TF (:func:`correction_tf` at the newest
        keyframe's reference camera); identity before the first keyframe."""
        if not self.keyframes or not self.keyframes[-1].poses:
            return np.eye(4)
        position = self.keyframes[-1].poses[0][2][:3, 3]
        return correction_tf(self.correction(self.keyframes[-1].node), position)

    def loops(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The accepted loops among the kept verdicts as pairs of reference-camera positions
        in the map frame."""
        positions = {}
        for verdict in self.closer.verdicts:
            for n in (verdict.current, verdict.candidate) if verdict.accepted else ():
                if n not in positions and n in self._reference:
                    positions[n] = self.correction(n).apply_c2w(self._reference[n])[:3, 3]
        return [(positions[v.current], positions[v.candidate]) for v in self.closer.verdicts
                if v.accepted and v.current in positions and v.candidate in positions]

    def stats(self) -> LoopStats:
        counts = self.closer.counts
        last = counts.last_optimisation
        return LoopStats("on", counts.keyframes, counts.candidates, counts.verified,
                         counts.accepted, sum(counts.refused.values()),
                         counts.odometry_edges, self._add_ms,
                         self._verify_ms, last.ms if last is not None else 0.0)


def _is_identity(sim: Sim3) -> bool:
    rotation = np.asarray(sim.rotation)
    return bool(np.abs(rotation - np.eye(3)).max() < MOVE_TOLERANCE
                and np.abs(np.asarray(sim.translation)).max() < MOVE_TOLERANCE
                and abs(np.log(sim.scale)) < MOVE_TOLERANCE)
