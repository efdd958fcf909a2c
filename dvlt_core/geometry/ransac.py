"""RANSAC over a patch grid, batched over frames and hypotheses.

Three procedures: :func:`ransac_upstream` reproduces upstream's homography estimator step for
step (candidate order, sampling table, 8-point hypotheses, inlier-weight scoring, one refit);
:func:`ransac_robust` draws minimal 4-point samples from every well-weighted point, scores with
a truncated quadratic (MSAC) and refines the best homography on its inliers;
:func:`ransac_rotation` does the same for a rotation between bearing pairs (2-point samples,
the known-intrinsics fit). All work on numpy arrays (see :mod:`dvlt_core.geometry.homography`
for why).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dvlt_core.geometry.homography import (
    as_columns,
    homographies_from_moments,
    homography_from_four_points,
    homography_from_moments,
    point_moments,
    transfer_errors,
)
from dvlt_core.geometry.robust_stats import masked_median
from dvlt_core.geometry.rotations import wahba_rotation

SAMPLE_SIZE = 8
MINIMAL_SAMPLE_SIZE = 4
ROTATION_SAMPLE_SIZE = 2
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
def _minimal_sample_table(
    num_hypotheses: int, num_candidates: int, seed: int, size: int = MINIMAL_SAMPLE_SIZE
) -> np.ndarray:
    """(num_hypotheses, size) distinct positions in ``range(num_candidates)``, fixed by the seed.

    Positions index a frame's candidate list, so frames with the same number of candidates
    share the table (and a frame's samples never depend on the rest of the batch). Read-only.
    """
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand((num_hypotheses, num_candidates), generator=gen)
    return _read_only(keys.argsort(dim=1)[:, :size].numpy())


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _minimal_samples(
    candidates: np.ndarray, num_hypotheses: int, seed: int, size: int = MINIMAL_SAMPLE_SIZE
) -> np.ndarray:
    """(F, num_hypotheses, size) indices of distinct candidates for (F, N) candidate masks.

    A frame with fewer than ``size`` candidates also draws non-candidates (the lowest indices).
    """
    # Candidate indices first (ascending), then the others: a stable sort of the mask.
    order = np.argsort(~candidates, axis=1, kind="stable")
    counts = np.maximum(candidates.sum(1), size)
    if counts.min() == counts.max():  # the usual case: one table for all frames
        return order[:, _minimal_sample_table(num_hypotheses, int(counts[0]), seed, size)]
    samples = np.empty((len(counts), num_hypotheses, size), dtype=order.dtype)
    for count in set(counts.tolist()):  # (np.unique would import numpy.ma: 7 ms, once)
        group = counts == count
        samples[group] = order[group][:, _minimal_sample_table(num_hypotheses, count, seed, size)]
    return samples


def _candidates(weights: np.ndarray) -> np.ndarray:
    """(F, N) mask of the usable points whose weight reaches the ``max(8, 0.3·N)``-th largest
    (ties all kept, so no sort order matters; every usable point for uniform weights)."""
    num_points = weights.shape[1]
    k = min(num_candidates(num_points), num_points)
    kth_weight = -np.partition(-weights, k - 1, axis=1)[:, k - 1 : k]
    return (weights > 0) & (weights >= kth_weight)


def _tightened_sq_threshold(sq_err: np.ndarray, inliers: np.ndarray, sq_t: float) -> np.ndarray:
    """(F, 1) squared threshold of 3 robust standard deviations of the inliers' errors,
    within ``[1e-3, t]``: the refits' tightened inlier test."""
    sq_sigma = masked_median(sq_err, inliers)[:, None] * _MAD_TO_SIGMA**2
    return np.clip(9.0 * sq_sigma, _MIN_REFINE_THRESHOLD**2, sq_t)


def _float32(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(array.astype(np.float32) for array in arrays)


def _masked_sum(mask: np.ndarray, contributions: np.ndarray) -> np.ndarray:
    """(F, 36) sums of (F, N, 36) point contributions over the points where (F, N) mask."""
    return (mask[:, None, :].astype(contributions.dtype) @ contributions)[:, 0]


def _take(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Gather per-frame points (F, N, ...) at indices (F, ...) → (F, ..., ...)."""
    frames = np.arange(points.shape[0]).reshape(-1, *([1] * (idx.ndim - 1)))
    return points[frames, idx]


def _upstream_targets(dirs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``(d_x, d_y)/d_z`` and weights, zeroed where ``|d_z| ≤ 1e-4`` (raw ``d_xy`` kept)."""
    z_ok = np.abs(dirs[..., 2]) > _Z_EPS
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
    contributions = point_moments(src, dst, weights)  # (F, N, 36)
    # A gathered sum, not a 0/1 membership matrix product: OpenBLAS runs a product that size
    # multithreaded, which costs milliseconds on a busy machine.
    hyps = homographies_from_moments(_take(contributions, sample_idx).sum(-2))  # (F, 100, 3, 3)

    # float32 like upstream, and half the memory traffic of the largest arrays here.
    src_cols, dst_cols = as_columns(src, homogeneous=True), as_columns(dst)
    sq_err = transfer_errors(*_float32(hyps, src_cols, dst_cols))  # (F, 100, N)
    inliers = sq_err < np.float32(UPSTREAM_THRESHOLD**2)
    score = (inliers @ weights[:, :, None])[..., 0]  # Σ w over the inliers
    best_inliers = _take(inliers, score.argmax(axis=1))  # first maximum, like torch

    hom = homography_from_moments(_masked_sum(best_inliers, contributions))
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
    min_inliers: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MSAC homography with local refinement, vectorised over frames and hypotheses.

    Candidates are all points whose weight is at least the ``max(8, 0.3·N)``-th largest weight
    (every point for uniform weights; ties are all kept, so no sort order matters). Each
    hypothesis is the exact homography through 4 distinct random candidates (fixed-seed keys
    shared by all frames; a minimal sample is all-inlier far more often than upstream's 8).
    The hypothesis with the lowest ``Σ w·min(e², t²)`` wins and is refitted by weighted least
    squares on its inliers, up to ``refinements`` times (until the inliers settle), each time
    with the threshold tightened to 3 robust standard deviations of the current inliers' errors
    (within ``[1e-3, t]``), so that moderate outliers below ``t`` stop biasing the fit.
    Frames with fewer than 4 candidates also draw unusable points; such fits get few inliers.
    A frame left with fewer than ``min_inliers`` inliers (or a non-finite fit) fails: it gets a
    least-squares fit to all its usable points instead (the identity if even that is not
    finite); its inlier mask stays that of the failed fit.

    Args:
        src: (F, N, 2) identity-camera points.
        dst: (F, N, 2) target points.
        weights: (F, N) weights, 0 for unusable points.
        threshold: inlier distance ``t`` in normalised image units.

    Returns:
        ``(homographies (F, 3, 3), inlier masks (F, N), success (F,))``.
    """
    usable = weights > 0
    sample_idx = _minimal_samples(_candidates(weights), num_hypotheses, seed)
    hyps = homography_from_four_points(_take(src, sample_idx), _take(dst, sample_idx))
    contributions = point_moments(src, dst, weights)  # (F, N, 36), for the refits
    src_cols, dst_cols = as_columns(src, homogeneous=True), as_columns(dst)

    def residuals(hom: np.ndarray) -> np.ndarray:
        """Squared errors; points mapped behind the plane or to NaN count as infinitely far."""
        return np.fmin(transfer_errors(hom, src_cols, dst_cols, clamp_depth=False), np.inf)

    sq_t = threshold**2
    # Scoring the hypotheses is the bulk of the arithmetic: float32 is accurate enough to rank
    # them. fmin (which ignores NaN) maps NaN errors, from points behind the plane or
    # degenerate hypotheses, to the truncation value.
    sq_err = transfer_errors(*_float32(hyps, src_cols, dst_cols), clamp_depth=False)
    cost = (np.fmin(sq_err, np.float32(sq_t)) @ weights[:, :, None].astype(np.float32))[..., 0]
    hom = _take(hyps, cost.argmin(axis=1))
    sq_err = residuals(hom)
    inliers = usable & (sq_err < sq_t)
    for _ in range(refinements):
        sq_adapt = _tightened_sq_threshold(sq_err, inliers, sq_t)
        hom = homography_from_moments(_masked_sum(inliers, contributions))
        sq_err = residuals(hom)
        refined = usable & (sq_err < sq_adapt)
        if np.array_equal(refined, inliers):
            break
        inliers = refined

    failed = (inliers.sum(-1) < min_inliers) | ~np.isfinite(hom).all((-2, -1))
    if failed.any():
        # Best effort: a least-squares fit to every usable point, else the identity.
        everything = homography_from_moments(contributions[failed].sum(1))
        everything[~np.isfinite(everything).all((-2, -1))] = np.eye(3)
        hom[failed] = everything
    return hom, inliers, ~failed


def ransac_rotation(
    bearings: np.ndarray,
    dirs: np.ndarray,
    weights: np.ndarray,
    threshold: float,
    num_hypotheses: int,
    refinements: int,
    seed: int,
    min_inliers: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MSAC rotation ``dirs ≈ R·bearings`` with local refinement, vectorised like
    :func:`ransac_robust` (same candidates, sampling keys, scoring and refinement schedule).

    Each hypothesis is the Kabsch rotation through 2 distinct random candidates; the error of
    a point is the chord ``‖dir − R·bearing‖`` between unit vectors (the angle in radians for
    small errors, so ``threshold`` reads like the homography fit's tangent-plane distance).
    The lowest ``Σ w·min(e², t²)`` wins and is refitted by weighted Kabsch on its inliers up
    to ``refinements`` times, with the tightened threshold of :func:`ransac_robust`. A frame
    left with fewer than ``min_inliers`` inliers fails and gets the weighted Kabsch rotation
    of all its usable points (the identity if it has none).

    Args:
        bearings: (F, N, 3) unit camera-frame bearings.
        dirs: (F, N, 3) unit world-frame ray directions.
        weights: (F, N) weights, 0 for unusable points.

    Returns:
        ``(rotations (F, 3, 3), inlier masks (F, N), success (F,))``.
    """
    usable = weights > 0
    sample_idx = _minimal_samples(_candidates(weights), num_hypotheses, seed, ROTATION_SAMPLE_SIZE)
    hyps = wahba_rotation(_take(bearings, sample_idx), _take(dirs, sample_idx))  # (F, M, 3, 3)

    bearing_cols = bearings.swapaxes(-1, -2)[:, None]  # (F, 1, 3, N)
    dir_cols = dirs.swapaxes(-1, -2)[:, None]

    def sq_errors(rotation: np.ndarray) -> np.ndarray:
        """(F, M, N) squared chords for (F, M, 3, 3) rotations."""
        return np.square(rotation @ bearing_cols - dir_cols).sum(-2)

    sq_t = threshold**2
    cost = (np.fmin(sq_errors(hyps), sq_t) @ weights[:, :, None])[..., 0]  # (F, M)
    rotation = _take(hyps, cost.argmin(axis=1))
    sq_err = sq_errors(rotation[:, None])[:, 0]
    inliers = usable & (sq_err < sq_t)
    for _ in range(refinements):
        sq_adapt = _tightened_sq_threshold(sq_err, inliers, sq_t)
        rotation = wahba_rotation(bearings, dirs, weights * inliers)
        sq_err = sq_errors(rotation[:, None])[:, 0]
        refined = usable & (sq_err < sq_adapt)
        if np.array_equal(refined, inliers):
            break
        inliers = refined

    failed = inliers.sum(-1) < min_inliers
    if failed.any():
        # Best effort: a fit to every usable point (the identity where there is none).
        rotation[failed] = wahba_rotation(bearings[failed], dirs[failed], weights[failed])
    return rotation, inliers, ~failed
