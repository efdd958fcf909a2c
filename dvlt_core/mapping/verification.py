"""Geometric verification of a loop candidate: run the model on both keyframes together.

A retrieved keyframe only looks like the current one. :func:`verify_loop` reconstructs one
regular window made of the current keyframe's snapshot followed by the candidate's, and
aligns that window onto each keyframe's own reconstruction through their shared views
(:func:`~dvlt_core.mapping.alignment.align_views`: the same images, so pose and depth are
comparable). The loop measurement is ``current_from_candidate = current_from_V ∘
candidate_from_V⁻¹`` between the two node frames. It is accepted only when

* every view of the verification window has a pose (with the keyframes' calibrated
  intrinsics when their windows had them);
* on each side, the shared views have enough valid depth pixels
  (:data:`~dvlt_core.mapping.alignment.MIN_DEPTH_PIXELS`) to measure the scale;
* on each side, at least ``min_depth_inliers`` of the shared depth pixels agree with the
  keyframe's own depth after the scale fit (a model that places the candidate at the wrong
  place predicts depth there that contradicts what it predicted for the same images
  before);
* on each side with two or more views, the views keep their relative poses: centre
  residual at most ``max_position_residual`` of the median depth, rotation residual at
  most ``max_rotation_residual_deg``;
* the candidate's surface seen in the current views: at least ``min_overlap`` of the
  candidate's depth samples project into a current view with a consistent depth (two
  places that merely look alike do not overlap);
* when ``predicted`` (the graph's current ``current_from_candidate``) is given, the
  measured scale is within a factor ``max_scale_ratio`` of it (scale drifts slowly; a jump
  is a wrong match).

:class:`Keyframe` is what verification (and the pose graph) needs of a keyframe: its
snapshot's images and, per view, its pose and depth samples in its own window's frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dvlt_core.geometry import Sim3
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping.alignment import Alignment, ViewGeometry, align_views, median_depth
from dvlt_core.mapping.pose_graph import EdgeSigmas
from dvlt_core.result import Reconstruction, ViewReconstruction


@dataclass(frozen=True)
class Keyframe:
    """A keyframe: ``node`` id, ``stamp_ns``, its snapshot's ``cameras`` and ``images``
    (uint8 RGB), ``views`` (:class:`ViewGeometry` in the node frame: the frame and unit of
    the window in which this snapshot was the newest) and ``intrinsics``: the calibrated K
    per camera its window was reconstructed with (None: predicted), which verification
    uses again."""

    node: int
    stamp_ns: int
    cameras: tuple[str, ...]
    images: tuple[np.ndarray, ...] = field(repr=False)
    views: tuple[ViewGeometry, ...] = field(repr=False)
    intrinsics: tuple[np.ndarray | None, ...] | None = field(default=None, repr=False)

    @classmethod
    def from_reconstruction(cls, node: int, stamp_ns: int, cameras: Sequence[str],
                            images: Sequence[np.ndarray], reconstruction: Reconstruction,
                            indices: Sequence[int], grid: int = 24,
                            intrinsics: Sequence[np.ndarray | None] | None = None) -> Keyframe:
        """The snapshot's views ``indices`` of ``reconstruction`` (its own window);
        ``intrinsics`` per camera of the snapshot (None: all predicted)."""
        views = tuple(ViewGeometry.from_view(reconstruction.views[i], grid) for i in indices)
        known = None
        if intrinsics is not None and any(k is not None for k in intrinsics):
            known = tuple(None if k is None else np.array(k, np.float64) for k in intrinsics)
        return cls(node, int(stamp_ns), tuple(cameras), tuple(images), views, known)

    @property
    def image_bytes(self) -> int:
        return sum(image.nbytes for image in self.images)


@dataclass(frozen=True)
class VerifyOptions:
    """Acceptance bounds (module docstring) and the reconstructor's ``num_steps``."""

    min_depth_inliers: float = 0.7
    depth_tolerance: float = 0.05
    max_position_residual: float = 0.05
    max_rotation_residual_deg: float = 2.0
    min_overlap: float = 0.25
    overlap_tolerance: float = 0.05
    overlap_stride: int = 4
    max_scale_ratio: float = 1.5
    num_steps: int | None = None
    grid: int = 24
    #: Floors of the loop edge's standard deviations (rotation rad; translation as a
    #: fraction of the median depth; log scale).
    min_sigmas: tuple[float, float, float] = (0.005, 0.01, 0.01)


@dataclass(frozen=True)
class LoopVerdict:
    """``accepted`` with the reason when refused; ``current_from_candidate`` (None when no
    alignment was possible), the edge's ``sigmas``, the checked figures (``stats``) and
    ``kind``: ``loop`` (a retrieved candidate) or ``local`` (a recent keyframe)."""

    accepted: bool
    reason: str
    current: int
    candidate: int
    current_from_candidate: Sim3 | None = None
    sigmas: EdgeSigmas | None = None
    stats: dict[str, float] = field(default_factory=dict)
    kind: str = "loop"


def verify_loop(
    reconstructor: Reconstructor,
    current: Keyframe,
    candidate: Keyframe,
    predicted: Sim3 | None = None,
    options: VerifyOptions | None = None,
) -> LoopVerdict:
    """Reconstruct ``current`` + ``candidate`` as one window and check it (module
    docstring). The reconstructor must be the one the keyframes were made with (same
    backend, resolution and image size), so the depth samples are comparable."""
    opts = options or VerifyOptions()
    images = [*current.images, *candidate.images]
    names = [f"{c}@{current.stamp_ns}" for c in current.cameras] + [
        f"{c}@{candidate.stamp_ns}" for c in candidate.cameras]
    n = len(current.images)
    known = None
    if current.intrinsics is not None or candidate.intrinsics is not None:
        known = [*(current.intrinsics or (None,) * n),
                 *(candidate.intrinsics or (None,) * len(candidate.images))]
    recon = reconstructor.reconstruct(images, opts.num_steps, names=names, intrinsics=known)

    def refuse(reason: str, **stats: float) -> LoopVerdict:
        return LoopVerdict(False, reason, current.node, candidate.node, stats=stats)

    if not all(v.pose_valid for v in recon.views):
        return refuse("a view of the verification window has no pose")
    here = [ViewGeometry.from_view(v, opts.grid) for v in recon.views]
    a = align_views(current.views, here[:n], opts.depth_tolerance)
    b = align_views(candidate.views, here[n:], opts.depth_tolerance)
    if a is None or b is None:
        return refuse("no scale observable between the verification window and a keyframe")
    if not (a.depth_scale and b.depth_scale):
        return refuse("too few depth pixels shared with a keyframe to measure the loop's scale",
                      depth_pixels=float(min(a.depth_pixels, b.depth_pixels)))
    stats = {"depth_inliers_current": a.depth_inlier_fraction,
             "depth_inliers_candidate": b.depth_inlier_fraction}
    if min(a.depth_inlier_fraction, b.depth_inlier_fraction) < opts.min_depth_inliers:
        return refuse("depth in the verification window contradicts a keyframe's own", **stats)
    for side, alignment, views in (("current", a, current.views),
                                   ("candidate", b, candidate.views)):
        depth = median_depth(views)
        stats[f"position_residual_{side}"] = alignment.position_rms / depth
        stats[f"rotation_residual_{side}_deg"] = alignment.rotation_max_deg
        if alignment.views >= 2 and (
            alignment.position_rms > opts.max_position_residual * depth
            or alignment.rotation_max_deg > opts.max_rotation_residual_deg
        ):
            return refuse(f"the {side} keyframe's views do not keep their relative poses",
                          **stats)
    overlap = covisible_fraction(recon.views[:n], recon.views[n:], opts.overlap_stride,
                                 opts.overlap_tolerance)
    stats["overlap"] = overlap
    if overlap < opts.min_overlap:
        return refuse("the candidate's surface is not seen by the current views", **stats)
    relative = a.target_from_source.compose(b.target_from_source.inverse())
    if predicted is not None:
        ratio = float(relative.scale / predicted.scale)
        stats["scale_ratio"] = ratio
        if not 1.0 / opts.max_scale_ratio <= ratio <= opts.max_scale_ratio:
            return refuse("the loop's scale differs too much from the map's", **stats)
    sigmas = _edge_sigmas(a, b, median_depth(current.views), opts.min_sigmas)
    return LoopVerdict(True, "", current.node, candidate.node, relative, sigmas, stats)


def covisible_fraction(
    targets: Sequence[ViewReconstruction],
    sources: Sequence[ViewReconstruction],
    stride: int = 4,
    tolerance: float = 0.05,
) -> float:
    """Fraction of the ``sources``' valid pixels (every ``stride``-th) whose point lands in
    one of the ``targets`` (same reconstruction) with a depth within ``tolerance`` (log
    ratio) of that view's depth there (nearest pixel)."""
    points = [s.world_points[::stride, ::stride][s.valid[::stride, ::stride]
                                                & (s.depth[::stride, ::stride] > 0)]
              for s in sources]
    points = np.concatenate(points) if points else np.empty((0, 3))
    if len(points) == 0:
        return 0.0
    seen = np.zeros(len(points), dtype=bool)
    for view in targets:
        c2w = view.extrinsics_c2w
        cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
        z = cam[:, 2]
        front = z > 1e-9
        uv = np.full((len(points), 2), -1.0)
        uv[front] = (cam[front] @ view.intrinsics.T)[:, :2] / z[front, None]
        u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        height, width = view.depth.shape
        inside = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        idx = np.nonzero(inside)[0]
        depth = view.depth[v[idx], u[idx]]
        ok = view.valid[v[idx], u[idx]] & (depth > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            agree = ok & (np.abs(np.log(z[idx] / np.where(ok, depth, 1.0))) <= tolerance)
        seen[idx[agree]] = True
    return float(seen.mean())



def _edge_sigmas(a: Alignment, b: Alignment, depth: float,
                 floors: tuple[float, float, float]) -> EdgeSigmas:
    """Loop edge sigmas from both sides' residuals (in the current node's unit)."""
    rotation = np.radians(np.hypot(a.rotation_max_deg, b.rotation_max_deg))
    translation = np.hypot(a.position_rms, b.position_rms * a.target_from_source.scale
                           / b.target_from_source.scale)
    log_scale = np.hypot(a.log_scale_sigma / np.sqrt(a.depth_pixels),
                         b.log_scale_sigma / np.sqrt(b.depth_pixels))
    return EdgeSigmas(max(float(rotation), floors[0]), max(float(translation), floors[1] * depth),
                      max(float(log_scale), floors[2]))
