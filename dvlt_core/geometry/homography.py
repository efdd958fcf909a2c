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


def point_moments(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each point pair's contribution to the four moments that make up a DLT normal matrix.

    A pair ``(x, y) → (u, v)`` with weight ``w`` contributes the design rows
    ``√w·[−p, 0, u·p]`` and ``√w·[0, −p, v·p]`` with ``p = (x, y, 1)``, so

        AᵀA = [[M₀, 0, −M_u], [0, M₀, −M_v], [−M_u, −M_v, M_uv]]

    with ``M₀ = Σ w·ppᵀ``, ``M_u = Σ w·u·ppᵀ``, ``M_v = Σ w·v·ppᵀ``, ``M_uv = Σ w·(u² + v²)·ppᵀ``.
    The moments of any subset of the pairs (or any re-weighting) are then a sum of these
    contributions, which is how the RANSAC code builds all its systems.

    Args:
        src: (..., n, 2) source points (broadcast against ``dst``).
        dst: (..., n, 2) target points.
        weights: (..., n) non-negative weights.

    Returns:
        (..., n, 36) float64 ``[M₀, M_u, M_v, M_uv]`` contributions, each 3×3 flattened.
    """
    p = _homogeneous(np.asarray(src, dtype=np.float64))
    outer = (p[..., :, None] * p[..., None, :]).reshape(*p.shape[:-1], 1, 9)
    dst = np.asarray(dst, dtype=np.float64)
    u, v = dst[..., 0], dst[..., 1]
    w = np.asarray(weights, dtype=np.float64)
    coef = np.stack([w, w * u, w * v, w * (u * u + v * v)], axis=-1)  # (..., n, 4)
    return (coef[..., None] * outer).reshape(*coef.shape[:-1], 36)


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
        moments: (..., 36) sums of :func:`point_moments`.

    Returns:
        (..., 9) float64 unit vectors, the homography's rows concatenated.
    """
    batch = moments.shape[:-1]
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


# Where each entry of the 9×9 normal matrix comes from in [moments (36) | 0], and its sign.
_GRAM_BLOCKS = [[0, None, 1], [None, 0, 2], [1, 2, 3]]  # M₀, M_u, M_v, M_uv by block
_GRAM_INDEX = np.array(
    [
        [36 if blk is None else 9 * blk + 3 * r + c for blk in row for c in range(3)]
        for row in _GRAM_BLOCKS
        for r in range(3)
    ]
)
_GRAM_SIGN = np.array(
    [[-1.0 if blk in (1, 2) else 1.0 for blk in row for _ in range(3)] for row in _GRAM_BLOCKS
     for _ in range(3)]
)  # fmt: skip


def normal_matrix(moments: np.ndarray) -> np.ndarray:
    """(..., 9, 9) DLT normal matrix ``AᵀA`` from (..., 36) sums of :func:`point_moments`."""
    padded = np.concatenate([moments, np.zeros((*moments.shape[:-1], 1))], axis=-1)
    return padded[..., _GRAM_INDEX] * _GRAM_SIGN


def homography_from_moments(moments: np.ndarray) -> np.ndarray:
    """Weighted DLT homographies for a few systems, normalised so that ``H[2, 2] = 1``.

    One LAPACK ``eigh`` of the 9×9 normal matrix per system (a few microseconds each): the
    right solver for one refit per frame. For many systems (RANSAC hypotheses) use
    :func:`homographies_from_moments`.

    Args:
        moments: (..., 36) sums of :func:`point_moments`.

    Returns:
        (..., 3, 3) float64 homographies.
    """
    gram = normal_matrix(moments)
    hom = np.linalg.eigh(gram)[1][..., 0]  # eigenvector of the smallest eigenvalue
    return _normalise(hom.reshape(*moments.shape[:-1], 3, 3))


def homographies_from_moments(moments: np.ndarray) -> np.ndarray:
    """:func:`homography_from_moments` for large batches, through :func:`dlt_solution`.

    Its cost hardly grows with the batch: 200 systems take about as long as 20 ``eigh`` calls.
    """
    return _normalise(dlt_solution(moments).reshape(*moments.shape[:-1], 3, 3))


def _normalise(hom: np.ndarray) -> np.ndarray:
    """Scale homographies to ``H[2, 2] = 1`` (non-finite where that entry is 0)."""
    return hom / hom[..., 2:3, 2:3]


def homography_from_four_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Exact homographies through 4 point pairs, in closed form, normalised to ``H[2, 2] = 1``.

    With ``A`` (``B``) the map of the projective basis onto the source (target) points (its
    columns are the first three points scaled by the Cramer coefficients ``s_i`` (``t_i``) of
    the fourth), ``H ∝ B·adj(A) ∝ Σᵢ t_i·s_j·s_k·qᵢ·(p_j × p_k)ᵀ`` over ``(i, j, k)`` cyclic,
    where ``p`` are the sources and ``q`` the targets, homogeneous. Degenerate samples (three
    collinear points) give non-finite or zero matrices.

    Args:
        src, dst: (..., 4, 2) point pairs.

    Returns:
        (..., 3, 3) float64 homographies.
    """
    batch = src.shape[:-2]
    # Batch-last coordinates (point, [x, u], [y, v], B): sources and targets side by side, so
    # that one elementwise operation serves both.
    coords = np.concatenate([src, dst], axis=-1).reshape(-1, 16).T.astype(np.float64)
    coords = coords.reshape(4, 2, 2, -1).swapaxes(1, 2)  # (4, 2 (x|y), 2 (src|dst), B)
    d = coords[1:] - coords[0]  # (3, 2, 2, B): p₁ − p₀, p₂ − p₀, p₃ − p₀
    # c_ab = det(p₀, p_a, p_b) = (p_a − p₀) × (p_b − p₀); the Cramer coefficients are
    # s₀ = det(p₁, p₂, p₃) = c₂₃ − c₁₃ + c₁₂, s₁ = det(p₀, p₃, p₂) = −c₂₃, s₂ = c₁₃.
    c12 = d[0, 0] * d[1, 1] - d[1, 0] * d[0, 1]
    c13 = d[0, 0] * d[2, 1] - d[2, 0] * d[0, 1]
    c23 = d[1, 0] * d[2, 1] - d[2, 0] * d[1, 1]
    s0, s1, s2 = c23 - c13 + c12, -c23, c13  # each (2 (src|dst), B)
    scale = np.stack([s1[0] * s2[0], s2[0] * s0[0], s0[0] * s1[0]]) * np.stack(
        [s0[1], s1[1], s2[1]]
    )  # (3, B): t_i·s_j·s_k
    x, y = coords[:, 0, 0], coords[:, 1, 0]  # sources, (4, B)
    j, k = [1, 2, 0], [2, 0, 1]
    cross = np.stack([y[j] - y[k], x[k] - x[j], x[j] * y[k] - x[k] * y[j]], axis=1)  # rows i
    targets = np.concatenate([coords[:3, :, 1].swapaxes(0, 1), np.ones((1, 3, x.shape[-1]))])
    hom = _mm(targets * scale, cross)  # (3, 3, B)
    return _normalise(np.moveaxis(hom, -1, 0).reshape(*batch, 3, 3))


def as_columns(points: np.ndarray, homogeneous: bool = False) -> np.ndarray:
    """(..., N, 2) points → (..., 2, N), or (..., 3, N) with a row of ones: the layout of
    :func:`transfer_errors`, prepared once per point set."""
    if homogeneous:
        points = _homogeneous(points)
    return np.ascontiguousarray(np.swapaxes(points, -1, -2))


def transfer_errors(
    hom: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    min_depth: float = 1e-8,
    clamp_depth: bool = True,
) -> np.ndarray:
    """Squared transfer errors ``‖H(src) − dst‖²`` of every point under every homography.

    Computed in the dtype of the inputs (float32 halves the cost of scoring many hypotheses).
    Non-finite homographies give NaN errors.

    Args:
        hom: (F, M, 3, 3) homographies (M per frame), or (F, 3, 3).
        src: (F, 3, N) or (3, N) homogeneous source points as columns (:func:`as_columns`).
        dst: (F, 2, N) target points as columns.
        min_depth: the smallest accepted projective denominator.
        clamp_depth: clamp smaller denominators to ``min_depth`` (upstream's rule); otherwise
            their errors are NaN (the point maps behind the plane).

    Returns:
        (F, M, N) (or (F, N)) squared errors.
    """
    if hom.ndim == 4:
        dst = dst[:, None]
    proj = hom @ (src[:, None] if hom.ndim == 4 and src.ndim == 3 else src)  # (F, [M,] 3, N)
    denom = proj[..., 2:, :]
    if clamp_depth:
        denom = np.maximum(denom, min_depth)
    else:
        denom = np.where(denom > min_depth, denom, np.nan)
    diff = proj[..., :2, :] / denom
    diff -= dst
    diff *= diff  # in place: these are the largest arrays of the fit
    return diff[..., 0, :] + diff[..., 1, :]


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
