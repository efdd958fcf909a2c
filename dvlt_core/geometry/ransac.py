"""RANSAC homography estimation over a patch grid, batched over frames and hypotheses.

Two procedures: :func:`ransac_upstream` reproduces upstream's estimator step for step
(candidate order, sampling table, 8-point hypotheses, inlier-weight scoring, one refit);
:func:`ransac_robust` draws minimal 4-point samples from every well-weighted point, scores with
a truncated quadratic (MSAC) and refines the best hypothesis on its inliers. Both work on numpy
arrays (see :mod:`dvlt_core.geometry.homography` for why).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dvlt_core.geometry.homography import (
    fit_homography,
    fit_homography_hypotheses,
    homography_from_four_points,
    transfer_errors,
)
from dvlt_core.geometry.robust_stats import masked_median

SAMPLE_SIZE = 8
MINIMAL_SAMPLE_SIZE = 4
CANDIDATE_FRACTION = 0.3
UPSTREAM_NUM_HYPOTHESES = 100
UPSTREAM_THRESHOLD = 0.2
UPSTREAM_SEED = 42
UPSTREAM_MIN_INLIERS = 4
_Z_EPS = 1e-4
_MAD_TO_SIGMA = 1.4826  # median absolute error → standard deviation for Gaussian errors
_MIN_REFINE_THRESHOLD = 1e-3  # the refined inlier threshold never drops below this


def num_candidates(num_points: int) -> int:
    """Size of the candidate set: ``max(8, floor(0.3·N))``."""
    return max(SAMPLE_SIZE, int(num_points * CANDIDATE_FRACTION))


@functools.lru_cache(maxsize=32)
def upstream_sample_table(n_sample: int) -> np.ndarray:
    """(100, 8) candidate positions: 100 × ``randperm(n_sample)[:8]``, CPU generator seeded 42.

    Upstream reseeds the generator for every chunk of two frames, so all frames share this table.
    Cached and read-only.
    """
    gen = torch.Generator().manual_seed(UPSTREAM_SEED)
    rows = [
        torch.randperm(n_sample, generator=gen)[:SAMPLE_SIZE]
        for _ in range(UPSTREAM_NUM_HYPOTHESES)
    ]
    return _read_only(torch.stack(rows).numpy())


@functools.lru_cache(maxsize=32)
def _sampling_keys(num_hypotheses: int, num_points: int, seed: int) -> np.ndarray:
    """(num_hypotheses, N) uniform keys; the 4 smallest candidate keys form a sample. Read-only."""
    gen = torch.Generator().manual_seed(seed)
    return _read_only(torch.rand((num_hypotheses, num_points), generator=gen).numpy())


@functools.lru_cache(maxsize=32)
def _all_candidate_samples(num_hypotheses: int, num_points: int, seed: int) -> np.ndarray:
    """(num_hypotheses, 4) samples when every point is a candidate (the common case). Read-only."""
    return _read_only(_smallest_keys(_sampling_keys(num_hypotheses, num_points, seed)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _smallest_keys(keys: np.ndarray) -> np.ndarray:
    """Indices of the 4 smallest keys along the last axis, in increasing key order."""
    idx = np.argpartition(keys, MINIMAL_SAMPLE_SIZE - 1, axis=-1)[..., :MINIMAL_SAMPLE_SIZE]
    order = np.take_along_axis(keys, idx, axis=-1).argsort(axis=-1)
    return np.take_along_axis(idx, order, axis=-1)


def _take(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Gather per-frame points (F, N, ...) at indices (F, ...) → (F, ..., ...)."""
    frames = np.arange(points.shape[0]).reshape(-1, *([1] * (idx.ndim - 1)))
    return points[frames, idx]


def _upstream_targets(dirs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``(d_x, d_y)/d_z`` and weights, zeroed where ``|d_z| ≤ 1e-4`` (raw ``d_xy`` kept)."""
    z_ok = np.abs(dirs[..., 2]) > _Z_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        dst = np.where(z_ok[..., None], dirs[..., :2] / dirs[..., 2:3], dirs[..., :2])
    return dst, np.where(z_ok, weights, weights.dtype.type(0))


def _top_candidates(weights: np.ndarray) -> np.ndarray:
    """First ``max(8, 0.3·N)`` indices of torch-CPU's (unstable) descending argsort, per frame.

    The tie order of that sort is part of upstream's behaviour, so it is torch's, on the
    float32 weights.
    """
    order = torch.argsort(torch.from_numpy(weights), dim=1, descending=True).numpy()
    return order[:, : num_candidates(weights.shape[1])]


def upstream_candidates(dirs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(F, n_sample) upstream RANSAC candidates for (F, N, 3) unit directions, (F, N) weights.

    ``weights`` must be float32 (upstream's dtype, whose tie order is reproduced).
    """
    return _top_candidates(_upstream_targets(dirs, weights)[1])


def ransac_upstream(
    src: np.ndarray, dirs: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's RANSAC homography, vectorised over frames.

    Args:
        src: (N, 2) identity-camera points.
        dirs: (F, N, 3) unit ray directions.
        weights: (F, N) non-negative float32 weights.

    Returns:
        ``(homographies (F, 3, 3), inlier counts (F,))``; frames with fewer than 4 inliers get
        the identity.
    """
    dst, weights = _upstream_targets(dirs, weights)
    candidates = _top_candidates(weights)
    sample_idx = candidates[:, upstream_sample_table(candidates.shape[1])]  # (F, 100, 8)
    hyps = fit_homography_hypotheses(
        src[sample_idx], _take(dst, sample_idx), _take(weights, sample_idx)
    )

    sq_err, _ = transfer_errors(hyps, src, dst)  # (F, 100, N)
    inliers = sq_err < UPSTREAM_THRESHOLD**2
    score = (inliers * weights[:, None]).sum(-1)
    best_inliers = _take(inliers, score.argmax(axis=1))  # first maximum, like torch

    hom = fit_homography(src, dst, weights * best_inliers)
    count = best_inliers.sum(-1)
    hom[count < UPSTREAM_MIN_INLIERS] = np.eye(3)
    return hom, count


def ransac_robust(
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray,
    threshold: float,
    num_hypotheses: int,
    refinements: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """MSAC homography with local refinement, vectorised over frames and hypotheses.

    Candidates are all points whose weight is at least the ``max(8, 0.3·N)``-th largest weight
    (every point for uniform weights; ties are all kept, so no sort order matters). Each
    hypothesis is the exact homography through 4 distinct random candidates (fixed-seed keys
    shared by all frames; a minimal sample is all-inlier far more often than upstream's 8).
    The hypothesis with the lowest ``Σ w·min(e², t²)`` wins and is refitted by weighted least
    squares on its inliers, up to ``refinements`` times (until the inliers settle), each time
    with the threshold tightened to 3 robust standard deviations of the current inliers' errors
    (within ``[1e-3, t]``), so that moderate outliers below ``t`` stop biasing the fit.
    Frames with fewer than 4 candidates also draw unusable points; such fits get few inliers
    and are for the caller to reject.

    Args:
        src: (F, N, 2) identity-camera points.
        dst: (F, N, 2) target points.
        weights: (F, N) weights, 0 for unusable points.
        threshold: inlier distance ``t`` in normalised image units.

    Returns:
        ``(homographies (F, 3, 3), inlier masks (F, N))``.
    """
    frames, num_points = weights.shape
    usable = weights > 0
    k = min(num_candidates(num_points), num_points)
    kth_weight = -np.partition(-weights, k - 1, axis=1)[:, k - 1 : k]
    candidates = usable & (weights >= kth_weight)
    if candidates.all():
        sample_idx = np.broadcast_to(
            _all_candidate_samples(num_hypotheses, num_points, seed),
            (frames, num_hypotheses, MINIMAL_SAMPLE_SIZE),
        )
    else:
        keys = _sampling_keys(num_hypotheses, num_points, seed)
        sample_idx = _smallest_keys(np.where(candidates[:, None], keys, 2.0))  # others last
    hyps = homography_from_four_points(_take(src, sample_idx), _take(dst, sample_idx))

    def residuals(hom: np.ndarray) -> np.ndarray:
        """Squared errors; points mapped behind the plane or to NaN count as infinitely far."""
        sq_err, denom = transfer_errors(hom, src, dst)
        return np.where((denom > 1e-8) & ~np.isnan(sq_err), sq_err, np.inf)

    sq_t = threshold**2
    cost = (weights[:, None] * np.minimum(residuals(hyps), sq_t)).sum(-1)
    hom = _take(hyps, cost.argmin(axis=1))
    sq_err = residuals(hom)
    inliers = usable & (sq_err < sq_t)
    for _ in range(refinements):
        # Tighten the threshold to 3 robust standard deviations of the inliers' errors.
        sq_sigma = masked_median(sq_err, inliers)[:, None] * _MAD_TO_SIGMA**2
        sq_adapt = np.clip(9.0 * sq_sigma, _MIN_REFINE_THRESHOLD**2, sq_t)
        hom = fit_homography(src, dst, weights * inliers)
        sq_err = residuals(hom)
        refined = usable & (sq_err < sq_adapt)
        if np.array_equal(refined, inliers):
            break
        inliers = refined
    return hom, inliers
