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
"""

from __future__ import annotations

import torch
from torch import Tensor

# Relative shift added to the normal matrix so that it is always invertible; it moves every
# eigenvalue by the same amount and so leaves the eigenvectors unchanged.
_GRAM_SHIFT = 1e-10
# Squarings of the inverse normal matrix: its 16th power separates eigenvalue ratios of 0.1
# by 1e-16 (and (1/_GRAM_SHIFT)**16 = 1e160 cannot overflow float64).
_POWER_SQUARINGS = 4
FOCAL_CLAMP = (0.1, 10.0)  # in units of the half image size: fx ∈ [W/20, 5W]


def normal_matrix(src: Tensor, dst: Tensor, weights: Tensor) -> Tensor:
    """Normal matrix ``AᵀA`` of the weighted DLT system of point pairs, in float64.

    Each pair ``(x, y) → (u, v)`` with weight ``w`` contributes the rows
    ``√w·[−p, 0, u·p]`` and ``√w·[0, −p, v·p]`` with ``p = (x, y, 1)``, so

        AᵀA = Σ w·[[ppᵀ, 0, −u·ppᵀ], [0, ppᵀ, −v·ppᵀ], [−u·ppᵀ, −v·ppᵀ, (u² + v²)·ppᵀ]],

    built here from four weighted moments of ``ppᵀ`` (one batched product) instead of the
    (2n, 9) design matrix.

    Args:
        src, dst: (..., n, 2) point pairs.
        weights: (..., n) non-negative weights.

    Returns:
        (..., 9, 9) float64.
    """
    src, dst, weights = src.double(), dst.double(), weights.double()
    p = torch.cat([src, torch.ones_like(src[..., :1])], dim=-1)
    outer = (p[..., :, None] * p[..., None, :]).flatten(-2)  # (..., n, 9)
    u, v = dst[..., 0], dst[..., 1]
    coef = weights[..., None] * torch.stack([torch.ones_like(u), u, v, u * u + v * v], dim=-1)
    m0, mu, mv, muv = (coef.mT @ outer).unflatten(-1, (3, 3)).unbind(-3)
    zero = torch.zeros_like(m0)
    return torch.cat(
        [
            torch.cat([m0, zero, -mu], dim=-1),
            torch.cat([zero, m0, -mv], dim=-1),
            torch.cat([-mu, -mv, muv], dim=-1),
        ],
        dim=-2,
    )


def smallest_eigenvector(gram: Tensor) -> Tensor:
    """Unit eigenvector of the smallest eigenvalue of (..., 9, 9) float64 PSD matrices, float32.

    For ``gram = AᵀA`` this is the DLT solution, the last row of ``Vᴴ`` in an SVD of ``A`` (up to
    sign). It is computed as the dominant eigenvector of the inverse by repeated squaring: a few
    batched 9×9 products instead of one LAPACK SVD per matrix, which is what makes 100
    hypotheses per frame cheap on CPU. Float64 keeps at least float32 SVD accuracy.
    """
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    eye = torch.eye(9, dtype=gram.dtype, device=gram.device)
    # Unit trace bounds the inverse by 1/_GRAM_SHIFT, so the powers stay far from overflow.
    power, _ = torch.linalg.inv_ex(gram / trace.clamp_min(1e-300) + _GRAM_SHIFT * eye)
    for _ in range(_POWER_SQUARINGS):
        power = power @ power
    power = power / power.abs().amax(dim=(-2, -1), keepdim=True)
    # The power is ≈ λ·h·hᵀ: its largest column is parallel to h.
    best_col = power.square().sum(-2).argmax(dim=-1)
    h = torch.take_along_dim(power, best_col[..., None, None], dim=-1).squeeze(-1)
    return (h * h.square().sum(-1, keepdim=True).rsqrt()).float()


def fit_homography(src: Tensor, dst: Tensor, weights: Tensor) -> Tensor:
    """Weighted DLT homography for a batch of point sets, normalised so that ``H[2, 2] = 1``.

    Args:
        src, dst: (..., n, 2) point pairs (``dst ≃ H·src``).
        weights: (..., n) non-negative weights; zero-weight pairs do not count.

    Returns:
        (..., 3, 3) float32 homographies.
    """
    hom = smallest_eigenvector(normal_matrix(src, dst, weights)).unflatten(-1, (3, 3))
    return hom / hom[..., 2:3, 2:3]


def homography_from_four_points(src: Tensor, dst: Tensor) -> Tensor:
    """Exact homographies through 4 point pairs, in closed form, normalised to ``H[2, 2] = 1``.

    ``H ∝ B·adj(A)``, where ``A`` (``B``) maps the projective basis onto the source (target)
    points: its columns are the first three points scaled by the Cramer coefficients of the
    fourth. Degenerate samples (three collinear points) give non-finite or zero matrices.

    Args:
        src, dst: (..., 4, 2) point pairs.

    Returns:
        (..., 3, 3) float32 homographies.
    """

    def basis_map(points: Tensor) -> Tensor:
        p = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1).unbind(-2)
        scales = [
            torch.linalg.vecdot(p[3], torch.linalg.cross(p[1], p[2])),
            torch.linalg.vecdot(p[0], torch.linalg.cross(p[3], p[2])),
            torch.linalg.vecdot(p[0], torch.linalg.cross(p[1], p[3])),
        ]
        return torch.stack(
            [col * s[..., None] for col, s in zip(p[:3], scales, strict=True)], dim=-1
        )

    a, b = basis_map(src.float()), basis_map(dst.float())
    cols = a.unbind(-1)
    adjugate = torch.stack(
        [
            torch.linalg.cross(cols[1], cols[2]),
            torch.linalg.cross(cols[2], cols[0]),
            torch.linalg.cross(cols[0], cols[1]),
        ],
        dim=-2,
    )
    hom = b @ adjugate
    return hom / hom[..., 2:3, 2:3]


def transfer_errors(
    hom: Tensor, src: Tensor, dst: Tensor, min_depth: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Squared transfer errors ``‖H(src) − dst‖²`` of every point under every homography.

    Args:
        hom: (F, M, 3, 3) homographies (M per frame), or (F, 3, 3).
        src, dst: (F, N, 2) point pairs.
        min_depth: the projective denominator is clamped to at least this value.

    Returns:
        ``(squared errors, denominators before clamping)``, each (F, M, N) (or (F, N)).
    """
    frames, num_points = src.shape[:2]
    src_h = torch.cat([src, torch.ones_like(src[..., :1])], dim=-1)
    # One (3M × 3) @ (3 × N) product per frame, with N last for the elementwise steps.
    proj = (hom.reshape(frames, -1, 3) @ src_h.mT).reshape(*hom.shape[:-1], num_points)
    x, y, denom = proj.unbind(-2)
    denom_c = denom.clamp(min=min_depth)
    u, v = dst.unbind(-1)
    if hom.ndim == 4:
        u, v = u[:, None], v[:, None]
    return (x / denom_c - u).square() + (y / denom_c - v).square(), denom


def _intrinsics_matrix(fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor) -> Tensor:
    zeros, ones = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack(
        [
            torch.stack([fx, zeros, cx], -1),
            torch.stack([zeros, fy, cy], -1),
            torch.stack([zeros, zeros, ones], -1),
        ],
        dim=-2,
    )


def decompose_ql(hom: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Upstream's split of ``H`` into rotation and intrinsics (exact only for a centred pp).

    ``H·P = Q̃·R̃`` (``P`` the exchange matrix), ``Q = Q̃·P``, ``L = P·R̃·P``, signs moved so that
    ``diag(L) ≥ 0``, ``L /= L[2, 2]``; then ``fx = (W/2)/clamp(L00)``, ``fy = (H/2)/clamp(L11)``,
    ``cx = (L20 + 1)·W/2``, ``cy = (L21 + 1)·H/2``.

    Args:
        hom: (F, 3, 3) homographies with positive determinant.

    Returns:
        ``(rotation (F, 3, 3), intrinsics (F, 3, 3))``.
    """
    exchange = torch.flip(torch.eye(3, dtype=hom.dtype, device=hom.device), dims=[1])
    q_tilde, r_tilde = torch.linalg.qr(hom @ exchange)
    q = q_tilde @ exchange
    lower = exchange @ r_tilde @ exchange
    signs = torch.sign(lower.diagonal(dim1=-2, dim2=-1))
    q = q * signs[..., None, :]
    lower = lower * signs[..., :, None]
    lower = lower / lower[..., 2:3, 2:3]
    inv_fx = 1.0 / lower[..., 0, 0].clamp(*FOCAL_CLAMP)
    inv_fy = 1.0 / lower[..., 1, 1].clamp(*FOCAL_CLAMP)
    intrinsics = _intrinsics_matrix(
        inv_fx * width / 2,
        inv_fy * height / 2,
        (lower[..., 2, 0] + 1.0) * width / 2,
        (lower[..., 2, 1] + 1.0) * height / 2,
    )
    return q, intrinsics


def decompose_qr(hom: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Split ``H ∝ R·M`` (``M`` upper-triangular, see module doc) into ``R`` and intrinsics.

    Works for any principal point. Skew in ``M`` (zero for a pinhole camera) is ignored, and
    the focal lengths are clamped to ``[W/20, 5W]`` (``[H/20, 5H]``) like upstream.

    Args:
        hom: (F, 3, 3) homographies (any sign).

    Returns:
        ``(rotation (F, 3, 3) with det +1, intrinsics (F, 3, 3))``.
    """
    det_sign = torch.where(torch.linalg.det(hom) < 0, -1.0, 1.0).to(hom.dtype)
    q, upper = torch.linalg.qr(hom * det_sign[..., None, None])
    signs = torch.where(upper.diagonal(dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(hom.dtype)
    q = q * signs[..., None, :]
    upper = upper * signs[..., :, None]
    upper = upper / upper[..., 2:3, 2:3]
    fx = (width / 2) / upper[..., 0, 0].clamp(*FOCAL_CLAMP)
    fy = (height / 2) / upper[..., 1, 1].clamp(*FOCAL_CLAMP)
    cx = width / 2 - upper[..., 0, 2] * fx
    cy = height / 2 - upper[..., 1, 2] * fy
    return q, _intrinsics_matrix(fx, fy, cx, cy)
