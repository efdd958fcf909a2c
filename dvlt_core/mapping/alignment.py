"""Aligning two reconstructions of the same views: the similarity between their frames.

Two windows that contain the same image (same camera, same stamp) each predict its pose and
depth in their own frame and unit. :func:`align_views` finds ``target_from_source`` from
such shared views: rotation as the chordal mean of ``R_target,i · R_source,iᵀ``, scale as
the median ratio of the two depth maps over the pixels valid in both (the same image, so
the maps are pixel-aligned; the spread of the camera centres when too few pixels are
usable), translation as the mean of ``c_target,i − s·R·c_source,i``. Beside the transform
it reports how well the views agree once aligned, which is what loop verification and the
pose graph's edge weights are made of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dvlt_core.geometry import Sim3, chordal_mean, rotation_angle
from dvlt_core.result import ViewReconstruction

#: Depth pixels needed for the depth-ratio scale (else the centres' spread is used).
MIN_DEPTH_PIXELS = 16
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class ViewGeometry:
    """One view as one reconstruction saw it: camera-to-frame pose ``c2w`` (4x4, that
    frame's unit) and depth samples ``depth`` on a fixed grid (0 where invalid)."""

    c2w: np.ndarray
    depth: np.ndarray

    @classmethod
    def from_view(cls, view: ViewReconstruction, grid: int = 24) -> ViewGeometry:
        return cls(np.array(view.extrinsics_c2w, dtype=np.float64), depth_samples(view, grid))


def depth_samples(view: ViewReconstruction, grid: int = 24) -> np.ndarray:
    """Depth on a ``grid`` x ``grid`` lattice of the view's map (0 where invalid)."""
    height, width = view.depth.shape
    rows = np.linspace(0, height - 1, min(grid, height)).round().astype(int)
    cols = np.linspace(0, width - 1, min(grid, width)).round().astype(int)
    depth = view.depth[np.ix_(rows, cols)].astype(np.float64)
    ok = view.valid[np.ix_(rows, cols)] & np.isfinite(depth) & (depth > 0)
    return np.where(ok, depth, 0.0)


def median_depth(views: Sequence[ViewGeometry]) -> float:
    """Median of the views' valid depth samples (1 when there are none): the length
    scale that makes residual bounds unit-free."""
    depth = np.concatenate([v.depth[v.depth > 0] for v in views])
    return float(np.median(depth)) if depth.size else 1.0


@dataclass(frozen=True)
class Alignment:
    """``target_from_source`` and the agreement of the shared views under it.

    ``depth_inlier_fraction``: shared depth pixels whose log ratio to the fitted scale is
    within the tolerance; ``log_scale_sigma``: robust spread of one pixel's log ratio
    (1.4826·MAD); ``position_rms``: camera centres' residual in target units (0 with one
    view); ``rotation_max_deg``: the largest rotation residual; ``depth_scale``: whether the
    scale came from depth (else from the centres' spread)."""

    target_from_source: Sim3
    views: int
    depth_pixels: int
    depth_inlier_fraction: float
    log_scale_sigma: float
    position_rms: float
    rotation_max_deg: float
    depth_scale: bool


def align_views(
    target: Sequence[ViewGeometry], source: Sequence[ViewGeometry], depth_tolerance: float = 0.05
) -> Alignment | None:
    """Align ``source`` onto ``target`` (the same views, in the same order); None when no
    scale is observable (no usable depth pixels and fewer than two distinct centres)."""
    if len(target) != len(source) or not target:
        raise ValueError(f"give the same views on both sides, got {len(target)} and {len(source)}")
    r_target = np.stack([v.c2w[:3, :3] for v in target])
    r_source = np.stack([v.c2w[:3, :3] for v in source])
    rotation = chordal_mean(r_target @ r_source.swapaxes(-1, -2))
    c_target = np.stack([v.c2w[:3, 3] for v in target])
    c_source = np.stack([v.c2w[:3, 3] for v in source]) @ rotation.T
    log_ratios = []
    for t, s in zip(target, source, strict=True):
        if t.depth.shape == s.depth.shape:
            ok = (t.depth > 0) & (s.depth > 0)
            log_ratios.append(np.log(t.depth[ok] / s.depth[ok]))
    log_ratios = np.concatenate(log_ratios) if log_ratios else np.empty(0)
    if log_ratios.size >= MIN_DEPTH_PIXELS:
        log_scale = float(np.median(log_ratios))
        scale, depth_scale = float(np.exp(log_scale)), True
        deviation = np.abs(log_ratios - log_scale)
        inliers = float((deviation <= depth_tolerance).mean())
        sigma = MAD_TO_SIGMA * float(np.median(deviation))
    else:
        spread_t = np.linalg.norm(c_target - c_target.mean(0), axis=1).sum()
        spread_s = np.linalg.norm(c_source - c_source.mean(0), axis=1).sum()
        if len(target) < 2 or spread_t <= 1e-9 or spread_s <= 1e-9:
            return None
        scale, depth_scale, inliers, sigma = float(spread_t / spread_s), False, 0.0, np.inf
    translation = (c_target - scale * c_source).mean(axis=0)
    residual = c_target - (scale * c_source + translation)
    angles = rotation_angle(r_target, rotation @ r_source)
    return Alignment(
        Sim3(rotation, translation, scale),
        views=len(target),
        depth_pixels=int(log_ratios.size),
        depth_inlier_fraction=inliers,
        log_scale_sigma=sigma,
        position_rms=float(np.sqrt((residual**2).sum(axis=1).mean())),
        rotation_max_deg=float(np.degrees(angles.max())),
        depth_scale=depth_scale,
    )
