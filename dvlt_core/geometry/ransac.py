"""RANSAC homography estimation over a patch grid, batched over frames and hypotheses.

Two procedures: :func:`ransac_upstream` reproduces upstream's estimator step for step
(candidate order, sampling table, 8-point hypotheses, inlier-weight scoring, one refit);
:func:`ransac_robust` draws minimal 4-point samples from every well-weighted point, scores with
a truncated quadratic (MSAC) and refines the best hypothesis on its inliers.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from dvlt_core.geometry.homography import (
    fit_homography,
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
def upstream_sample_table(n_sample: int) -> Tensor:
    """(100, 8) candidate positions: 100 × ``randperm(n_sample)[:8]``, CPU generator seeded 42.

    Upstream reseeds the generator for every chunk of two frames, so all frames share this table.
    Cached: treat the returned tensor as read-only.
    """
    gen = torch.Generator().manual_seed(UPSTREAM_SEED)
    rows = [
        torch.randperm(n_sample, generator=gen)[:SAMPLE_SIZE]
        for _ in range(UPSTREAM_NUM_HYPOTHESES)
    ]
    return torch.stack(rows)


@functools.lru_cache(maxsize=32)
def _sampling_keys(num_hypotheses: int, num_points: int, seed: int) -> Tensor:
    """(num_hypotheses, N) uniform keys; the 4 smallest candidate keys form a sample. Read-only."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((num_hypotheses, num_points), generator=gen)


def _take(points: Tensor, idx: Tensor) -> Tensor:
    """Gather per-frame points (F, N, ...) at indices (F, ...) → (F, ..., ...)."""
    frames = torch.arange(points.shape[0], device=points.device)
    frames = frames.view(-1, *([1] * (idx.ndim - 1)))
    return points[frames, idx]


def _refit(src: Tensor, dst: Tensor, weights: Tensor, inliers: Tensor) -> Tensor:
    """Weighted DLT over the inliers of each frame, batched: outliers get weight 0."""
    return fit_homography(src.expand(dst.shape), dst, weights * inliers)


def _upstream_targets(dirs: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Targets ``(d_x, d_y)/d_z`` and weights, zeroed where ``|d_z| ≤ 1e-4`` (raw ``d_xy`` kept)."""
    z_ok = dirs[..., 2].abs() > _Z_EPS
    dst = torch.where(z_ok[..., None], dirs[..., :2] / dirs[..., 2:3], dirs[..., :2])
    return dst, torch.where(z_ok, weights, 0.0)


def _top_candidates(weights: Tensor) -> Tensor:
    """First ``max(8, 0.3·N)`` indices of torch-CPU's (unstable) descending argsort, per frame.

    The CPU tie order is part of upstream's behaviour, so the sort runs on CPU on any device.
    """
    order = torch.argsort(weights.cpu(), dim=1, descending=True).to(weights.device)
    return order[:, : num_candidates(weights.shape[1])]


def upstream_candidates(dirs: Tensor, weights: Tensor) -> Tensor:
    """(F, n_sample) upstream RANSAC candidates for (F, N, 3) unit directions and (F, N) weights."""
    return _top_candidates(_upstream_targets(dirs, weights)[1])


def ransac_upstream(src: Tensor, dirs: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Upstream's RANSAC homography, vectorised over frames.

    Args:
        src: (N, 2) identity-camera points.
        dirs: (F, N, 3) unit ray directions.
        weights: (F, N) non-negative weights.

    Returns:
        ``(homographies (F, 3, 3), inlier counts (F,))``; frames with fewer than 4 inliers get
        the identity.
    """
    dst, weights = _upstream_targets(dirs, weights)
    candidates = _top_candidates(weights)
    n_sample = candidates.shape[1]
    sample_idx = candidates[:, upstream_sample_table(n_sample).to(weights.device)]  # (F, 100, 8)
    hyps = fit_homography(
        src[sample_idx], _take(dst, sample_idx), _take(weights, sample_idx)
    )  # (F, 100, 3, 3)

    sq_err, _ = transfer_errors(hyps, src.expand(dst.shape), dst)
    inliers = sq_err.sqrt() < UPSTREAM_THRESHOLD
    score = (inliers * weights[:, None]).sum(-1)
    best = score.argmax(dim=1)
    best_inliers = _take(inliers, best)  # (F, N)

    hom = _refit(src, dst, weights, best_inliers)
    count = best_inliers.sum(-1)
    identity = torch.eye(3, dtype=hom.dtype, device=hom.device)
    hom = torch.where((count < UPSTREAM_MIN_INLIERS)[:, None, None], identity, hom)
    return hom, count


def ransac_robust(
    src: Tensor,
    dst: Tensor,
    weights: Tensor,
    threshold: float,
    num_hypotheses: int,
    refinements: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
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
    num_points = src.shape[1]
    usable = weights > 0
    k = min(num_candidates(num_points), num_points)
    kth_weight = weights.topk(k, dim=1).values[:, -1:]
    candidates = usable & (weights >= kth_weight)
    keys = _sampling_keys(num_hypotheses, num_points, seed).to(weights.device)
    keys = torch.where(candidates[:, None], keys, 2.0)  # non-candidates sort last
    sample_idx = keys.topk(MINIMAL_SAMPLE_SIZE, dim=-1, largest=False).indices
    hyps = homography_from_four_points(_take(src, sample_idx), _take(dst, sample_idx))

    def residuals(hom: Tensor) -> Tensor:
        """Squared errors; points mapped behind the plane or to NaN count as infinitely far."""
        sq_err, denom = transfer_errors(hom, src, dst)
        return torch.where(denom > 1e-8, sq_err, torch.inf).nan_to_num(nan=torch.inf)

    sq_t = threshold**2
    cost = (weights[:, None] * residuals(hyps).clamp_max(sq_t)).sum(-1)
    best = cost.argmin(dim=1)
    hom = _take(hyps, best)
    sq_err = residuals(hom)
    inliers = usable & (sq_err < sq_t)
    for _ in range(refinements):
        # Tighten the threshold to 3 robust standard deviations of the inliers' errors.
        sq_sigma = masked_median(sq_err, inliers)[:, None] * _MAD_TO_SIGMA**2
        sq_adapt = (9.0 * sq_sigma).clamp(min=_MIN_REFINE_THRESHOLD**2, max=sq_t)
        hom = _refit(src, dst, weights, inliers)
        sq_err = residuals(hom)
        refined = usable & (sq_err < sq_adapt)
        if torch.equal(refined, inliers):
            break
        inliers = refined
    return hom, inliers
