"""Place a window in one of the robot's TF frames: align its predicted camera poses to TF.

For the views of a window, the reconstruction predicts camera-to-window poses ``A_i`` (centre
``p_i``, window units) and TF knows the same cameras' optical frames in a world frame such as
``odom`` at the image stamps, ``B_i`` (centre ``q_i``, metres). :func:`anchor_to_tf` finds
the similarity ``world_from_window`` (``x -> s·R·x + t``) that best maps the former onto the
latter:

* **rotation** from both kinds of evidence at once: maximise
  ``tr(Rᵀ·M)``, ``M = s·Σ wᵢ (qᵢ − q̄)(pᵢ − p̄)ᵀ / σ_p² + Σ wᵢ Bᵢ Aᵢᵀ / (2σ_r²)``, i.e. the
  weighted Umeyama (Kabsch) term of the centres plus the chordal rotation average of
  ``Bᵢ·Aᵢᵀ``, each weighted by its expected noise (``position_sigma`` metres,
  ``rotation_sigma_deg``). With fewer than three non-collinear centres the centre term is
  rank-deficient and the rotation average fixes the rest; with well-spread centres and
  small ``position_sigma`` it reduces to Umeyama.
* **scale**: ``fixed_scale`` when the window is metric (1 for a metric backend, or the
  metric scale already applied: SE(3)); otherwise (Sim(3)) the least-squares
  ``s = Σ wᵢ (qᵢ − q̄)·R(pᵢ − p̄) / Σ wᵢ ‖pᵢ − p̄‖²``, refused when the TF centres span less
  than ``min_spread`` metres (RMS about their mean: the scale is not observable);
* **translation** ``t = q̄ − s·R·p̄`` (weighted means).

The rotation and scale are refined alternately (a few rounds). Views whose position or
rotation residual is an outlier (beyond ``outlier_sigmas`` robust deviations and the
``min_*_gate`` floors) are dropped once and the fit repeated. Degenerate input gives an
:class:`AnchorRefused` with the reason, never a silently wrong transform. The result's
``world_from_window`` is a :class:`~dvlt_core.geometry.Sim3`.

TF poses must be of the images' optical frames (x right, y down, z forward: the
``frame_id`` of a camera image by convention), like the predicted poses.
The session runs it every cycle with ``anchor: tf`` (:mod:`dvlt_ros.pipeline.grounding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dvlt_core.geometry import Sim3
from dvlt_core.geometry.rotations import nearest_rotation, rotation_angle
from dvlt_core.result import Reconstruction

_MAD_TO_SIGMA = 1.4826
_ROUNDS = 5


@dataclass(frozen=True)
class AnchorOptions:
    """Noise priors and gates of :func:`anchor_to_tf` (metres and degrees)."""

    position_sigma: float = 0.01
    rotation_sigma_deg: float = 0.5
    min_spread: float = 0.05
    outlier_sigmas: float = 3.0
    min_position_gate: float = 0.05
    min_rotation_gate_deg: float = 2.0

    def __post_init__(self) -> None:
        values = (self.position_sigma, self.rotation_sigma_deg, self.outlier_sigmas)
        if min(values) <= 0 or self.min_spread < 0:
            raise ValueError("sigmas and outlier_sigmas must be > 0, min_spread >= 0")
        if self.min_position_gate < 0 or self.min_rotation_gate_deg < 0:
            raise ValueError("gates must be >= 0")


@dataclass(frozen=True)
class Anchor:
    """``world_from_window`` (``x -> s·R·x + t``) and how well it fits.

    ``views``: indices of the input views used; ``rejected``: outliers left out;
    ``position_residuals`` (metres, world frame) and ``rotation_residuals_deg`` of the used
    views, in the order of ``views``; ``scale_fixed``: True for SE(3) (``fixed_scale``).
    Place a camera with ``world_from_window.apply_c2w(c2w)``.
    """

    world_from_window: Sim3
    views: tuple[int, ...]
    rejected: tuple[int, ...]
    position_residuals: np.ndarray = field(repr=False)
    rotation_residuals_deg: np.ndarray = field(repr=False)
    scale_fixed: bool

    @property
    def rms_position(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.position_residuals))))

    @property
    def max_rotation_deg(self) -> float:
        return float(self.rotation_residuals_deg.max())


@dataclass(frozen=True)
class AnchorRefused:
    """No placement for this window, and why."""

    reason: str


AnchorOutcome = Anchor | AnchorRefused


def anchor_to_tf(
    window_from_camera: np.ndarray,
    world_from_camera: np.ndarray,
    *,
    fixed_scale: float | None = None,
    weights: np.ndarray | None = None,
    options: AnchorOptions | None = None,
) -> AnchorOutcome:
    """Align predicted camera poses (N, 4, 4, window units) to TF poses (N, 4, 4, metres).

    ``fixed_scale``: metres per window unit when known (SE(3) fit), None to fit it (Sim(3)).
    ``weights`` (N,): per-view confidence (None: uniform). Views with non-finite poses or
    zero weight are left out. See the module docstring for the method.
    """
    options = options or AnchorOptions()
    predicted = np.asarray(window_from_camera, dtype=np.float64)
    measured = np.asarray(world_from_camera, dtype=np.float64)
    if predicted.ndim != 3 or predicted.shape[1:] != (4, 4) or predicted.shape != measured.shape:
        raise ValueError(
            f"expected two (N, 4, 4) pose stacks, got {predicted.shape} and {measured.shape}"
        )
    count = len(predicted)
    w = np.ones(count) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (count,) or (w < 0).any():
        raise ValueError(f"weights must be ({count},) and non-negative")
    if fixed_scale is not None and not (math.isfinite(fixed_scale) and fixed_scale > 0):
        raise ValueError(f"fixed_scale must be positive metres per unit, got {fixed_scale}")
    finite = np.isfinite(predicted).all((1, 2)) & np.isfinite(measured).all((1, 2))
    used = np.nonzero(finite & (w > 0))[0]
    if used.size == 0:
        return AnchorRefused("no view has both a valid predicted pose and a TF pose")
    fit = _fit(predicted[used], measured[used], w[used], fixed_scale, options)
    if isinstance(fit, AnchorRefused):
        return fit
    rotation, translation, scale = fit
    pos_res, rot_res = _residuals(predicted[used], measured[used], rotation, translation, scale)
    outliers = _outliers(pos_res, rot_res, options)
    rejected: tuple[int, ...] = ()
    if outliers.any() and (~outliers).sum() >= (1 if fixed_scale is not None else 2):
        refit = _fit(
            predicted[used[~outliers]], measured[used[~outliers]], w[used[~outliers]],
            fixed_scale, options,
        )
        if not isinstance(refit, AnchorRefused):
            rejected = tuple(int(i) for i in used[outliers])
            used = used[~outliers]
            rotation, translation, scale = refit
            pos_res, rot_res = _residuals(
                predicted[used], measured[used], rotation, translation, scale
            )
    return Anchor(
        Sim3(rotation, translation, scale),
        tuple(int(i) for i in used),
        rejected,
        pos_res,
        rot_res,
        fixed_scale is not None,
    )


def anchor_reconstruction(
    reconstruction: Reconstruction,
    world_from_camera: Sequence[np.ndarray | None],
    *,
    fixed_scale: float | None = None,
    options: AnchorOptions | None = None,
) -> AnchorOutcome:
    """:func:`anchor_to_tf` on a reconstruction's views, one TF pose (or None: no TF at that
    stamp) per view; views whose pose fit failed are left out. Indices in the result are
    view indices."""
    if len(world_from_camera) != len(reconstruction):
        raise ValueError(
            f"{len(world_from_camera)} TF poses for {len(reconstruction)} views (None: no TF)"
        )
    nan = np.full((4, 4), np.nan)
    predicted = np.stack([v.extrinsics_c2w for v in reconstruction.views]).astype(np.float64)
    measured = np.stack([nan if p is None else np.asarray(p, float) for p in world_from_camera])
    valid = np.array([v.pose_valid for v in reconstruction.views], dtype=np.float64)
    return anchor_to_tf(
        predicted, measured, fixed_scale=fixed_scale, weights=valid, options=options
    )


def _fit(
    predicted: np.ndarray,
    measured: np.ndarray,
    weights: np.ndarray,
    fixed_scale: float | None,
    options: AnchorOptions,
) -> tuple[np.ndarray, np.ndarray, float] | AnchorRefused:
    w = weights / weights.sum()
    p, q = predicted[:, :3, 3], measured[:, :3, 3]
    p_mean, q_mean = w @ p, w @ q
    x, y = p - p_mean, q - q_mean
    spread = math.sqrt(float(w @ np.square(y).sum(1)))
    if fixed_scale is None and spread < options.min_spread:
        return AnchorRefused(
            f"the cameras' TF positions span {spread:.3f} m (RMS), under min_spread="
            f"{options.min_spread} m: the scale is not observable; give a metric scale or "
            "views further apart"
        )
    var_x = float(w @ np.square(x).sum(1))
    if fixed_scale is None and var_x <= 1e-18:
        return AnchorRefused("the predicted camera centres coincide: the scale is not observable")
    rotation_term = np.einsum("n,nij,nkj->ik", w, measured[:, :3, :3], predicted[:, :3, :3])
    rotation_term /= 2.0 * math.radians(options.rotation_sigma_deg) ** 2
    centre_term = np.einsum("n,ni,nj->ij", w, y, x) / options.position_sigma**2
    scale = fixed_scale if fixed_scale is not None else 1.0
    rotation = nearest_rotation(rotation_term)
    if fixed_scale is None:
        scale = float(np.einsum("n,ni,ni->", w, y, x @ rotation.T)) / var_x
    for _ in range(_ROUNDS):
        rotation = nearest_rotation(scale * centre_term + rotation_term)
        if fixed_scale is None:
            scale = float(np.einsum("n,ni,ni->", w, y, x @ rotation.T)) / var_x
    if not scale > 0:
        return AnchorRefused(
            "the predicted motion and the TF motion point opposite ways (negative scale): the "
            "poses or the TF frames are inconsistent"
        )
    return rotation, q_mean - scale * rotation @ p_mean, float(scale)


def _residuals(
    predicted: np.ndarray,
    measured: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    centres = scale * predicted[:, :3, 3] @ rotation.T + translation
    positions = np.linalg.norm(centres - measured[:, :3, 3], axis=1)
    angles = np.degrees(rotation_angle(rotation @ predicted[:, :3, :3], measured[:, :3, :3]))
    return positions, angles


def _outliers(positions: np.ndarray, angles: np.ndarray, options: AnchorOptions) -> np.ndarray:
    def gate(values: np.ndarray, floor: float) -> float:
        return max(floor, options.outlier_sigmas * _MAD_TO_SIGMA * float(np.median(values)))

    return (positions > gate(positions, options.min_position_gate)) | (
        angles > gate(angles, options.min_rotation_gate_deg)
    )
