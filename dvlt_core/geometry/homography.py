"""Homography fitting (weighted DLT) and its split into a rotation and pinhole intrinsics.

The pose fit maps identity-camera points ``(X, Y)`` on a normalised 2×2 image (``X = u·2/W − 1``
for pixel coordinate ``u``) to ray directions ``(d_x/d_z, d_y/d_z)``. For a pinhole camera with
camera-to-world rotation ``R`` that map is the homography ``H ∝ R·M`` with

    M = [[W/(2fx), 0, (W/2 − cx)/fx],
         [0, H/(2fy), (H/2 − cy)/fy],
         [0, 0, 1]],

an orthogonal matrix times an upper-triangular one, so a QR factorisation of ``H`` recovers
``R``, ``fx``, ``fy``, ``cx`` and ``cy``. Upstream splits ``H`` with a QL factorisation instead,
which is exact only for a centred principal point (kept here for parity).

Everything here works on small patch-level arrays (a few hundred points, ~100 hypotheses per
frame), where the cost is per-operation overhead, not arithmetic. It therefore runs in numpy
float64 (about a microsecond per operation, against several for a torch dispatch) with closed
forms for the 3×3 algebra; the caller moves the patch data off the device once.
"""

from __future__ import annotations

import numpy as np

# Relative shift added to the normal matrix so that it is always invertible; it moves every
# eigenvalue by the same amount and so leaves the eigenvectors unchanged.
_GRAM_SHIFT = 1e-10
# Squarings of the inverse normal matrix: its 16th power separates eigenvalue ratios of 0.1
# by 1e-16 (and (1/_GRAM_SHIFT)**16 = 1e160 cannot overflow float64).
_POWER_SQUARINGS = 4
FOCAL_CLAMP = (0.1, 10.0)  # in units of the half image size: fx ∈ [W/20, 5W]


def _homogeneous(points: np.ndarray) -> np.ndarray:
    """``(..., 2)`` → ``(..., 3)`` with a trailing 1."""
    return np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)


def dlt_moments(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The four weighted moments that make up the normal matrix ``AᵀA`` of a weighted DLT.

    Each pair ``(x, y) → (u, v)`` with weight ``w`` contributes the rows
    ``√w·[−p, 0, u·p]`` and ``√w·[0, −p, v·p]`` with ``p = (x, y, 1)``, so

        AᵀA = [[M₀, 0, −M_u], [0, M₀, −M_v], [−M_u, −M_v, M_uv]]

    with ``M₀ = Σ w·ppᵀ``, ``M_u = Σ w·u·ppᵀ``, ``M_v = Σ w·v·ppᵀ``, ``M_uv = Σ w·(u² + v²)·ppᵀ``.

    Args:
        src, dst: (..., n, 2) point pairs.
        weights: (..., n) non-negative weights.

    Returns:
        (..., 4, 3, 3) float64 ``[M₀, M_u, M_v, M_uv]``.
    """
    p = _homogeneous(np.asarray(src, dtype=np.float64))
    outer = (p[..., :, None] * p[..., None, :]).reshape(*p.shape[:-1], 9)  # (..., n, 9)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    u, v = dst[..., 0], dst[..., 1]
    coef = np.stack([w, w * u, w * v, w * (u * u + v * v)], axis=-2)  # (..., 4, n)
    return (coef @ outer).reshape(*coef.shape[:-1], 3, 3)


# The 3×3 algebra of `dlt_solution` runs on "batch-last" stacks (3, 3, B): every matrix entry is
# then a contiguous length-B vector, and one elementwise numpy operation serves the whole batch.


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix products of batch-last stacks (..., 3, 3, B)."""
    return (a[..., :, :, None, :] * b[..., None, :, :, :]).sum(-3)


def _inverse(m: np.ndarray) -> np.ndarray:
    """Inverses of a batch-last stack (3, 3, B): adjugate (cross products of rows) / det."""
    rows_1, rows_2 = m[[1, 2, 0]], m[[2, 0, 1]]  # rows i+1 and i+2 next to each row i
    cof = rows_1[:, [1, 2, 0]] * rows_2[:, [2, 0, 1]] - rows_1[:, [2, 0, 1]] * rows_2[:, [1, 2, 0]]
    return cof.swapaxes(0, 1) / (m[0] * cof[0]).sum(0)


def dlt_solution(moments: np.ndarray) -> np.ndarray:
    """Unit eigenvector of the smallest eigenvalue of the DLT normal matrix given its moments.

    This is the DLT solution, the last row of ``Vᴴ`` in an SVD of the design matrix (up to
    sign). It is the dominant eigenvector of the inverse, taken by repeated squaring. The
    inverse is assembled from 3×3 closed forms through the block structure of the normal matrix
    (the Schur complement of its block-diagonal ``diag(M₀, M₀)`` part), so a batch of 100
    hypotheses costs a few dozen vectorised operations instead of one LAPACK call each.

    Args:
        moments: (..., 4, 3, 3) from :func:`dlt_moments`.

    Returns:
        (..., 9) float64 unit vectors, the homography's rows concatenated.
    """
    batch = moments.shape[:-3]
    m = np.ascontiguousarray(moments.reshape(-1, 36).T).reshape(4, 3, 3, -1)  # batch-last
    diag = np.arange(3)
    trace = 2 * m[0, diag, diag].sum(0) + m[3, diag, diag].sum(0)
    # Unit trace bounds the inverse by 1/_GRAM_SHIFT, so the powers stay far from overflow.
    m = m / np.maximum(trace, 1e-300)
    m[0, diag, diag] += _GRAM_SHIFT
    m[3, diag, diag] += _GRAM_SHIFT
    a_inv = _inverse(m[0])
    pq = _mm(a_inv, m[1:3])  # M₀⁻¹·M_u, M₀⁻¹·M_v (M_u, M_v are symmetric)
    s_inv = _inverse(m[3] - _mm(m[1:3], pq).sum(0))  # inverse Schur complement
    pq_s = _mm(pq, s_inv)
    # Block (i, j) of the top-left 6×6 of the inverse: δᵢⱼ·M₀⁻¹ + (PQ·S⁻¹)ᵢ·(PQ)ⱼᵀ.
    top_left = _mm(pq_s[:, None], pq[None].swapaxes(-3, -2))  # (2, 2, 3, 3, B)
    top_left[diag[:2], diag[:2]] += a_inv
    power = np.empty((9, 9, m.shape[-1]))
    power[:6, :6] = top_left.swapaxes(1, 2).reshape(6, 6, -1)
    power[:6, 6:] = pq_s.reshape(6, 3, -1)
    power[6:, :6] = power[:6, 6:].swapaxes(0, 1)
    power[6:, 6:] = s_inv
    power = np.ascontiguousarray(power.transpose(2, 0, 1))  # (B, 9, 9) for batched matmul
    for _ in range(_POWER_SQUARINGS):
        power = power @ power
    # The power is ≈ λ·h·hᵀ: its column with the largest diagonal entry is parallel to h.
    best_col = np.diagonal(power, axis1=-2, axis2=-1).argmax(-1)
    h = power[np.arange(power.shape[0]), :, best_col]  # entries up to 1e160: rescale first
    h /= np.abs(h).max(-1, keepdims=True)
    h /= np.sqrt(np.square(h).sum(-1, keepdims=True))
    return h.reshape(*batch, 9)


def normal_matrix(moments: np.ndarray) -> np.ndarray:
    """(..., 9, 9) DLT normal matrix ``AᵀA`` assembled from :func:`dlt_moments`."""
    m0, mu, mv, muv = (moments[..., k, :, :] for k in range(4))
    gram = np.zeros((*moments.shape[:-3], 9, 9))
    gram[..., :3, :3] = gram[..., 3:6, 3:6] = m0
    gram[..., :3, 6:] = gram[..., 6:, :3] = -mu
    gram[..., 3:6, 6:] = gram[..., 6:, 3:6] = -mv
    gram[..., 6:, 6:] = muv
    return gram


def fit_homography(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted DLT homography for a few point sets, normalised so that ``H[2, 2] = 1``.

    One LAPACK ``eigh`` of the 9×9 normal matrix per set (a few microseconds each): the right
    solver for one refit per frame. For a batch of RANSAC hypotheses use
    :func:`fit_homography_hypotheses`.

    Args:
        src, dst: (..., n, 2) point pairs (``dst ≃ H·src``).
        weights: (..., n) non-negative weights; zero-weight pairs do not count.

    Returns:
        (..., 3, 3) float64 homographies.
    """
    gram = normal_matrix(dlt_moments(src, dst, weights))
    hom = np.linalg.eigh(gram)[1][..., 0].reshape(*gram.shape[:-2], 3, 3)  # smallest eigenvalue
    return _normalise(hom)


def fit_homography_hypotheses(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`fit_homography` for large batches (RANSAC hypotheses), via :func:`dlt_solution`.

    Its cost hardly grows with the batch: 200 systems take about as long as 20 ``eigh`` calls.
    """
    hom = dlt_solution(dlt_moments(src, dst, weights)).reshape(*weights.shape[:-1], 3, 3)
    return _normalise(hom)


def _normalise(hom: np.ndarray) -> np.ndarray:
    """Scale homographies to ``H[2, 2] = 1`` (non-finite where that entry is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return hom / hom[..., 2:3, 2:3]


def _cramer(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(3, B) Cramer coefficients of the 4th point in the basis of the first three.

    ``s₀ = p₃·(p₁×p₂)``, ``s₁ = p₀·(p₃×p₂)``, ``s₂ = p₀·(p₁×p₃)`` for points ``p = (x, y, 1)``
    given as (4, B) coordinate rows.
    """
    i, j, k = [3, 0, 0], [1, 3, 1], [2, 2, 3]  # sₙ = det(p_i, p_j, p_k)
    return (x[j] - x[i]) * (y[k] - y[i]) - (x[k] - x[i]) * (y[j] - y[i])


def homography_from_four_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Exact homographies through 4 point pairs, in closed form, normalised to ``H[2, 2] = 1``.

    With ``A`` (``B``) the map of the projective basis onto the source (target) points (its
    columns are the first three points scaled by the Cramer coefficients ``s_i`` (``t_i``) of
    the fourth), ``H ∝ B·adj(A) ∝ Q·diag(t_i·s_j·s_k)·X``, where ``Q``'s columns are the first
    three targets and ``X``'s rows the cross products ``p_j × p_k`` of the sources
    (``(i, j, k)`` cyclic). Degenerate samples (three collinear points) give non-finite or zero
    matrices.

    Args:
        src, dst: (..., 4, 2) point pairs.

    Returns:
        (..., 3, 3) float64 homographies.
    """
    batch = src.shape[:-2]
    # Batch-last coordinate rows (4, B) each: x, y of the sources, u, v of the targets.
    coords = np.concatenate([src, dst], axis=-1).reshape(-1, 16).T.astype(np.float64)
    x, y, u, v = coords[0::4], coords[1::4], coords[2::4], coords[3::4]
    s, t = _cramer(x, y), _cramer(u, v)
    scale = t * s[[1, 2, 0]] * s[[2, 0, 1]]  # (3, B)
    j, k = [1, 2, 0], [2, 0, 1]
    cross = np.stack([y[j] - y[k], x[k] - x[j], x[j] * y[k] - x[k] * y[j]], axis=1)  # rows i
    targets = np.stack([u[:3], v[:3], np.ones_like(u[:3])])
    hom = _mm(targets * scale, cross)  # (3, 3, B)
    return _normalise(np.moveaxis(hom, -1, 0).reshape(*batch, 3, 3))


def transfer_errors(
    hom: np.ndarray, src: np.ndarray, dst: np.ndarray, min_depth: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """Squared transfer errors ``‖H(src) − dst‖²`` of every point under every homography.

    Args:
        hom: (F, M, 3, 3) homographies (M per frame), or (F, 3, 3).
        src: (F, N, 2) or (N, 2) source points.
        dst: (F, N, 2) target points.
        min_depth: the projective denominator is clamped to at least this value.

    Returns:
        ``(squared errors, denominators before clamping)``, each (F, M, N) (or (F, N)).
    """
    frames, num_points = dst.shape[:2]
    u, v = dst[..., 0], dst[..., 1]
    if hom.ndim == 4:
        u, v = u[:, None], v[:, None]
    # Degenerate (non-finite) hypotheses give NaN errors, which the callers handle.
    with np.errstate(invalid="ignore", over="ignore"):
        # One (3M × 3) @ (3 × N) product per frame, with N last for the elementwise steps.
        proj = hom.reshape(frames, -1, 3) @ np.swapaxes(_homogeneous(src), -1, -2)
        proj = proj.reshape(*hom.shape[:-1], num_points)
        x, y, denom = proj[..., 0, :], proj[..., 1, :], proj[..., 2, :]
        denom_c = np.maximum(denom, min_depth)
        return np.square(x / denom_c - u) + np.square(y / denom_c - v), denom


def intrinsics_matrix(fx: np.ndarray, fy: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """(F, 3, 3) pinhole matrices from (F,) focal lengths and principal point."""
    k = np.zeros((*fx.shape, 3, 3))
    k[..., 0, 0], k[..., 0, 2], k[..., 1, 1], k[..., 1, 2], k[..., 2, 2] = fx, cx, fy, cy, 1.0
    return k


def decompose_ql(hom: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's split of ``H`` into rotation and intrinsics (exact only for a centred pp).

    ``H·P = Q̃·R̃`` (``P`` the exchange matrix), ``Q = Q̃·P``, ``L = P·R̃·P``, signs moved so that
    ``diag(L) ≥ 0``, ``L /= L[2, 2]``; then ``fx = (W/2)/clamp(L00)``, ``fy = (H/2)/clamp(L11)``,
    ``cx = (L20 + 1)·W/2``, ``cy = (L21 + 1)·H/2``.

    Args:
        hom: (F, 3, 3) homographies with positive determinant.

    Returns:
        ``(rotation (F, 3, 3), intrinsics (F, 3, 3))``.
    """
    q_tilde, r_tilde = np.linalg.qr(hom[..., ::-1])  # H·P reverses the columns
    q = q_tilde[..., ::-1]
    lower = r_tilde[..., ::-1, ::-1]
    signs = np.sign(np.diagonal(lower, axis1=-2, axis2=-1))
    q = q * signs[..., None, :]
    lower = lower * signs[..., :, None]
    lower = lower / lower[..., 2:3, 2:3]
    inv_fx = 1.0 / np.clip(lower[..., 0, 0], *FOCAL_CLAMP)
    inv_fy = 1.0 / np.clip(lower[..., 1, 1], *FOCAL_CLAMP)
    intrinsics = intrinsics_matrix(
        inv_fx * width / 2,
        inv_fy * height / 2,
        (lower[..., 2, 0] + 1.0) * width / 2,
        (lower[..., 2, 1] + 1.0) * height / 2,
    )
    return q, intrinsics


def decompose_qr(hom: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``H ∝ R·M`` (``M`` upper-triangular, see module doc) into ``R`` and intrinsics.

    Works for any principal point. Skew in ``M`` (zero for a pinhole camera) is ignored, and
    the focal lengths are clamped to ``[W/20, 5W]`` (``[H/20, 5H]``) like upstream.

    Args:
        hom: (F, 3, 3) finite homographies (any sign).

    Returns:
        ``(rotation (F, 3, 3) with det +1, intrinsics (F, 3, 3))``.
    """
    det_sign = np.where(np.linalg.det(hom) < 0, -1.0, 1.0)
    q, upper = np.linalg.qr(hom * det_sign[..., None, None])
    signs = np.where(np.diagonal(upper, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
    q = q * signs[..., None, :]
    upper = upper * signs[..., :, None]
    upper = upper / upper[..., 2:3, 2:3]
    fx = (width / 2) / np.clip(upper[..., 0, 0], *FOCAL_CLAMP)
    fy = (height / 2) / np.clip(upper[..., 1, 1], *FOCAL_CLAMP)
    cx = width / 2 - upper[..., 0, 2] * fx
    cy = height / 2 - upper[..., 1, 2] * fy
    return q, intrinsics_matrix(fx, fy, cx, cy)
