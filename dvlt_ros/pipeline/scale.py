"""Metric scale of a window's reconstruction from what the robot knows in metres.

A reconstruction is up to scale: ``metres_per_unit`` converts its units to metres. Three
sources measure it, each a robust median of ratios ``known metres / reconstructed units``
(:func:`robust_scale`):

* :func:`rig_scale`: distances between the optical centres of the cameras of one
  synchronised snapshot, known from the rig's extrinsics (``base_from_camera``, e.g. from
  ``/tf_static``), against the reconstructed ones. Pairs closer than ``min_baseline`` are
  left out (too little leverage).
* :func:`odometry_scale`: distances a camera travelled between the window's snapshots, known
  from odometry (``odom_from_base`` at the image stamps, e.g. TF ``odom -> base_link``, and
  the camera's mount), against the reconstructed ones. Motions under ``min_motion`` are left
  out: a standing or turning-in-place robot gives no estimate.
* :func:`depth_scale`: a depth sensor's depth (metres) against the predicted depth at the
  same pixels, registered to the colour image or reprojected through its own intrinsics and
  extrinsics.

:func:`choose_scale` picks one (``auto``), :class:`ScaleSmoother` smooths a source over
windows. Each returns a :class:`ScaleEstimate` (value, spread, number of constraints) or a
:class:`ScaleUnavailable` with the reason, never a silent None.

The session runs them every cycle through :mod:`dvlt_ros.pipeline.grounding`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from dvlt_core.result import Reconstruction, ViewReconstruction
from dvlt_ros.pipeline.window import ViewWindow

SOURCES = ("rig", "odometry", "depth")
#: ``auto``'s preference: fixed extrinsics first (no drift, no time offsets), then a depth
#: sensor (metric but with its own biases), then odometry (wheel slip, needs motion).
AUTO_ORDER = ("rig", "depth", "odometry")
_MAD_TO_SIGMA = 1.4826  # median absolute deviation → standard deviation (Gaussian)
_MEDIAN_EFFICIENCY = 1.2533  # std of a median / std of a mean, Gaussian samples

FrameKey = Literal["frame_id", "camera"]
PoseLookup = Mapping[int, np.ndarray] | Callable[[int], "np.ndarray | None"]


@dataclass(frozen=True)
class ScaleOptions:
    """Outlier rejection shared by every source.

    Constraints whose log ratio is more than ``outlier_sigmas`` robust standard deviations
    (1.4826·MAD, floored at ``min_sigma``) from the median are rejected; fewer than
    ``min_constraints`` inliers, or an inlier spread above ``max_spread``, give no estimate.
    """

    outlier_sigmas: float = 3.0
    min_sigma: float = 0.005
    min_constraints: int = 1
    max_spread: float = 0.25

    def __post_init__(self) -> None:
        if self.outlier_sigmas <= 0 or self.min_sigma < 0 or self.max_spread <= 0:
            raise ValueError("outlier_sigmas and max_spread must be > 0, min_sigma >= 0")
        if self.min_constraints < 1:
            raise ValueError(f"min_constraints must be >= 1, got {self.min_constraints}")


@dataclass(frozen=True)
class ScaleEstimate:
    """Metres per reconstruction unit from one source.

    ``spread``: robust relative standard deviation of a single constraint (1.4826·MAD of the
    inliers' log ratios; NaN with one constraint). ``standard_error``: relative standard
    error of the estimate, ``1.2533·spread/sqrt(constraints)`` (assumes independent
    constraints: too optimistic for depth pixels, whose errors are correlated).
    ``constraints``: inliers used; ``rejected``: outliers dropped.
    """

    source: str
    metres_per_unit: float
    spread: float
    standard_error: float
    constraints: int
    rejected: int = 0


@dataclass(frozen=True)
class ScaleUnavailable:
    """No estimate from ``source`` this window, and why (``constraints``: usable ones
    found)."""

    source: str
    reason: str
    constraints: int = 0


ScaleOutcome = ScaleEstimate | ScaleUnavailable


def robust_scale(
    known: np.ndarray,
    predicted: np.ndarray,
    source: str,
    options: ScaleOptions | None = None,
    weights: np.ndarray | None = None,
) -> ScaleOutcome:
    """Median of ``known / predicted`` in log space after MAD outlier rejection.

    ``weights`` (None: uniform) are the constraints' inverse relative variances, e.g. the
    squared known lengths when the reconstructed positions carry a constant error. Residuals
    are scaled by ``sqrt(w / mean(w))`` before the MAD and the gate, so that a short (noisier)
    constraint is not rejected for noise a long one would not have. Pairs where a value is
    non-finite or not positive are not constraints. ``spread`` is the robust standard
    deviation (1.4826·MAD) of the scaled inlier residuals: the relative error of a constraint
    of mean weight.
    """
    options = options or ScaleOptions()
    known = np.asarray(known, dtype=np.float64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    w = np.ones(known.shape) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if known.shape != predicted.shape or w.shape != known.shape:
        raise ValueError(
            f"{known.size} known values, {predicted.size} predicted ones and {w.size} weights"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(known) & np.isfinite(predicted) & (known > 0) & (predicted > 0)
        ok &= np.isfinite(w) & (w > 0)
        logs = np.log(known[ok]) - np.log(predicted[ok])
    if logs.size < options.min_constraints:
        return ScaleUnavailable(
            source,
            f"{logs.size} usable constraints, {options.min_constraints} needed",
            int(logs.size),
        )
    leverage = np.sqrt(w[ok] / w[ok].mean())
    centre = float(np.median(logs))
    scaled = np.abs(logs - centre) * leverage
    sigma = max(_MAD_TO_SIGMA * float(np.median(scaled)), options.min_sigma)
    keep = scaled <= options.outlier_sigmas * sigma
    logs, leverage = logs[keep], leverage[keep]
    rejected = int(keep.size - logs.size)
    if logs.size < options.min_constraints:
        return ScaleUnavailable(
            source,
            f"{logs.size} constraints agree ({rejected} rejected), "
            f"{options.min_constraints} needed",
            int(keep.size),
        )
    centre = float(np.median(logs))
    spread = math.nan
    if logs.size >= 2:
        spread = _MAD_TO_SIGMA * float(np.median(np.abs(logs - centre) * leverage))
    if spread > options.max_spread:
        return ScaleUnavailable(
            source,
            f"the constraints disagree (relative spread {spread:.3f} > {options.max_spread})",
            int(keep.size),
        )
    return ScaleEstimate(
        source,
        math.exp(centre),
        spread,
        _MEDIAN_EFFICIENCY * spread / math.sqrt(logs.size),
        int(logs.size),
        rejected,
    )


def _frame_key(window: ViewWindow, index: int, key: FrameKey) -> str:
    frame = window.frames[index]
    return frame.frame_id if key == "frame_id" else frame.camera


def _usable_views(window: ViewWindow, reconstruction: Reconstruction) -> list[int]:
    if len(window) != len(reconstruction):
        raise ValueError(
            f"the window has {len(window)} views but the reconstruction {len(reconstruction)}"
        )
    return [
        i
        for i, view in enumerate(reconstruction.views)
        if view.pose_valid and np.isfinite(view.extrinsics_c2w).all()
    ]


def _distance(reconstruction: Reconstruction, a: int, b: int) -> float:
    """Distance between the predicted optical centres of views ``a`` and ``b``."""
    pose_a, pose_b = (np.asarray(reconstruction.views[i].extrinsics_c2w, float) for i in (a, b))
    return float(np.linalg.norm(pose_a[:3, 3] - pose_b[:3, 3]))


def _lengths_scale(
    known: list[float], predicted: list[float], source: str, options: ScaleOptions | None
) -> ScaleOutcome:
    """:func:`robust_scale` of known lengths, weighted by length² (centre errors are constant
    in metres, so a constraint's relative error goes as 1 / length)."""
    lengths = np.array(known)
    return robust_scale(lengths, np.array(predicted), source, options, weights=lengths**2)


def rig_scale(
    window: ViewWindow,
    reconstruction: Reconstruction,
    base_from_camera: Mapping[str, np.ndarray],
    *,
    key: FrameKey = "frame_id",
    min_baseline: float = 0.05,
    options: ScaleOptions | None = None,
) -> ScaleOutcome:
    """Scale from known camera-to-camera baselines (``"rig"``).

    Args:
        base_from_camera: 4x4 pose (metres) of each camera's optical frame in a common rig
            frame, keyed by the views' ``frame_id`` (``key="frame_id"``, what TF gives) or
            camera name (``key="camera"``). Only the translations are used.
        min_baseline: pairs whose known distance is below this (metres) are left out.

    Every pair of views of the same snapshot (timestep) with valid poses and known mounts is
    a constraint. The snapshot's images are synchronised within the synchroniser's
    tolerance; motion during that tolerance adds ``speed · Δt`` to a baseline.
    """
    usable = _usable_views(window, reconstruction)
    mounted = [i for i in usable if _frame_key(window, i, key) in base_from_camera]
    if not mounted:
        names = sorted({_frame_key(window, i, key) for i in usable})
        return ScaleUnavailable(
            "rig", f"no extrinsics for the window's cameras ({', '.join(names) or 'none valid'})"
        )
    centres = {
        name: np.asarray(pose, dtype=np.float64)[:3, 3] for name, pose in base_from_camera.items()
    }
    known, predicted = [], []
    for pos, a in enumerate(mounted):
        for b in mounted[pos + 1 :]:
            if window.timesteps[a] != window.timesteps[b]:
                continue
            name_a, name_b = _frame_key(window, a, key), _frame_key(window, b, key)
            baseline = float(np.linalg.norm(centres[name_a] - centres[name_b]))
            if baseline >= min_baseline:
                known.append(baseline)
                predicted.append(_distance(reconstruction, a, b))
    if not known:
        return ScaleUnavailable(
            "rig", f"no synchronised camera pair at least {min_baseline} m apart in the window"
        )
    return _lengths_scale(known, predicted, "rig", options)


def _lookup(poses: PoseLookup, stamp_ns: int) -> np.ndarray | None:
    pose = poses.get(stamp_ns) if isinstance(poses, Mapping) else poses(stamp_ns)
    return None if pose is None else np.asarray(pose, dtype=np.float64)


def odometry_scale(
    window: ViewWindow,
    reconstruction: Reconstruction,
    odom_from_base: PoseLookup,
    base_from_camera: Mapping[str, np.ndarray],
    *,
    key: FrameKey = "frame_id",
    min_motion: float = 0.05,
    options: ScaleOptions | None = None,
) -> ScaleOutcome:
    """Scale from the distance each camera travelled between snapshots (``"odometry"``).

    Args:
        odom_from_base: 4x4 pose (metres) of the robot base in the odometry frame at a view's
            stamp (integer ns): a mapping ``stamp -> pose`` or a callable (e.g. a TF lookup)
            returning None where unknown.
        base_from_camera: each camera's optical frame in the base frame (see
            :func:`rig_scale`); the lever arm matters as soon as the base turns.
        min_motion: pairs where the camera moved less than this (metres) are left out.

    Every pair of views of the same camera at different timesteps, both with valid poses and
    known odometry, is a constraint.
    """
    usable = [
        i
        for i in _usable_views(window, reconstruction)
        if _frame_key(window, i, key) in base_from_camera
    ]
    positions: dict[int, np.ndarray] = {}
    for i in usable:
        odom = _lookup(odom_from_base, window.frames[i].stamp_ns)
        if odom is not None and np.isfinite(odom).all():
            mount = np.asarray(base_from_camera[_frame_key(window, i, key)], dtype=np.float64)
            positions[i] = (odom @ mount)[:3, 3]
    if len({window.timesteps[i] for i in positions}) < 2:
        return ScaleUnavailable(
            "odometry",
            "odometry and a valid pose are known for fewer than two of the window's snapshots "
            "(a window needs max_timesteps >= 2, odometry at the image stamps, camera mounts)",
        )
    known, predicted, largest = [], [], 0.0
    views = sorted(positions)
    for pos, a in enumerate(views):
        for b in views[pos + 1 :]:
            same_camera = _frame_key(window, a, key) == _frame_key(window, b, key)
            if not same_camera or window.timesteps[a] == window.timesteps[b]:
                continue
            motion = float(np.linalg.norm(positions[a] - positions[b]))
            largest = max(largest, motion)
            if motion >= min_motion:
                known.append(motion)
                predicted.append(_distance(reconstruction, a, b))
    if not known:
        return ScaleUnavailable(
            "odometry",
            f"the cameras moved at most {largest:.3f} m between snapshots, under "
            f"min_motion={min_motion} m",
        )
    return _lengths_scale(known, predicted, "odometry", options)


@dataclass(frozen=True)
class MeasuredDepth:
    """A depth sensor's image for one view.

    ``depth``: (h, w) metres, invalid where 0, negative or non-finite (:meth:`from_image`
    converts 16UC1 millimetres). ``k``: the depth image's OpenCV intrinsics; None means the
    depth is registered to the view's colour image (same size, same camera).
    ``colour_from_depth``: 4x4 pose (metres) of the depth camera's optical frame in the colour
    camera's optical frame, for reprojection (None: identity; needs ``k``).
    """

    depth: np.ndarray = field(repr=False)
    k: np.ndarray | None = None
    colour_from_depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        depth = np.asarray(self.depth)
        if depth.ndim != 2:
            raise ValueError(f"depth must be (h, w), got {depth.shape}")
        if self.colour_from_depth is not None and self.k is None:
            raise ValueError("a depth camera with its own extrinsics needs its intrinsics k")

    @classmethod
    def from_image(
        cls,
        pixels: np.ndarray,
        k: np.ndarray | None = None,
        colour_from_depth: np.ndarray | None = None,
    ) -> MeasuredDepth:
        """From a depth image as ROS sends it (REP 118): uint16 millimetres (16UC1) or
        float metres (32FC1)."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[..., 0]
        if pixels.dtype == np.uint16:
            depth = pixels.astype(np.float32) * np.float32(1e-3)
        elif np.issubdtype(pixels.dtype, np.floating):
            depth = pixels.astype(np.float32)
        else:
            raise ValueError(
                f"depth images are uint16 millimetres (16UC1) or float metres (32FC1), got "
                f"{pixels.dtype}"
            )
        return cls(depth, k, colour_from_depth)


def depth_scale(
    reconstruction: Reconstruction,
    measured: Sequence[MeasuredDepth | None],
    *,
    depth_range: tuple[float, float] = (0.1, 20.0),
    min_valid_pixels: int = 500,
    options: ScaleOptions | None = None,
) -> ScaleOutcome:
    """Scale from measured depth (``"depth"``): median of ``measured / predicted`` over the
    pixels valid in both, pooled over the views.

    Args:
        measured: one entry per view of the reconstruction (None: no depth for that view).
            Registered depth must have the size of the view's maps (the reconstruction's
            resolution); other depth is reprojected into the view with its ``k`` and
            ``colour_from_depth`` (nearest pixel, nearest surface wins).
        depth_range: measured depth outside [near, far] metres is invalid (sensor range).
        min_valid_pixels: fewer valid pixel pairs give no estimate.
    """
    if len(measured) != len(reconstruction):
        raise ValueError(
            f"{len(measured)} depth entries for {len(reconstruction)} views (None: no depth)"
        )
    near, far = depth_range
    known, predicted = [], []
    for view, sensor in zip(reconstruction.views, measured, strict=True):
        if sensor is None:
            continue
        metres = _depth_in_view(view, sensor)
        pred = view.depth.astype(np.float64)
        ok = np.isfinite(metres) & (metres >= near) & (metres <= far)
        ok &= view.valid & np.isfinite(pred) & (pred > 0)
        known.append(metres[ok])
        predicted.append(pred[ok])
    if not known:
        return ScaleUnavailable("depth", "no view has a depth image")
    options = options or ScaleOptions()
    count = int(sum(k.size for k in known))
    if count < max(min_valid_pixels, 1):
        return ScaleUnavailable(
            "depth",
            f"{count} pixels have both measured and predicted depth, {min_valid_pixels} needed",
            count,
        )
    return robust_scale(np.concatenate(known), np.concatenate(predicted), "depth", options)


def _depth_in_view(view: ViewReconstruction, sensor: MeasuredDepth) -> np.ndarray:
    """Measured z-depth (metres, NaN where unknown) at the view's pixels."""
    height, width = view.depth.shape
    depth = np.asarray(sensor.depth, dtype=np.float64)
    if sensor.k is None:
        if depth.shape != (height, width):
            raise ValueError(
                f"registered depth is {depth.shape[1]}x{depth.shape[0]} but the view's maps "
                f"are {width}x{height}: give the depth image's k (and extrinsics) to reproject"
            )
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)
    rows, cols = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[rows, cols]
    k_inv = np.linalg.inv(np.asarray(sensor.k, dtype=np.float64))
    points = np.stack([cols * z, rows * z, z], axis=-1) @ k_inv.T
    if sensor.colour_from_depth is not None:
        pose = np.asarray(sensor.colour_from_depth, dtype=np.float64)
        points = points @ pose[:3, :3].T + pose[:3, 3]
    out = np.full((height, width), np.inf)
    front = points[:, 2] > 0
    points = points[front]
    pixels = points @ np.asarray(view.intrinsics, dtype=np.float64).T
    u = np.rint(pixels[:, 0] / pixels[:, 2]).astype(np.int64)
    v = np.rint(pixels[:, 1] / pixels[:, 2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    np.minimum.at(out.reshape(-1), v[inside] * width + u[inside], points[inside, 2])
    return np.where(np.isfinite(out), out, np.nan)


@dataclass(frozen=True)
class ScaleChoice:
    """What ``auto`` chose: ``estimate`` (None: no source had one), every ``outcome``
    considered, the sources whose estimate ``conflicts`` with the chosen one, and a
    one-line ``summary`` for diagnostics."""

    estimate: ScaleEstimate | None
    outcomes: tuple[ScaleOutcome, ...]
    conflicts: tuple[str, ...]
    summary: str


def choose_scale(
    outcomes: Iterable[ScaleOutcome],
    *,
    order: Sequence[str] = AUTO_ORDER,
    max_disagreement: float = 0.05,
) -> ScaleChoice:
    """``auto``: the first source of ``order`` that has an estimate.

    Another source conflicts when the two estimates differ by more than ``max_disagreement``
    (relative) and by more than three combined standard errors.
    """
    outcomes = tuple(outcomes)
    rank = {source: i for i, source in enumerate(order)}
    available = sorted(
        (o for o in outcomes if isinstance(o, ScaleEstimate) and o.source in rank),
        key=lambda o: rank[o.source],
    )
    if not available:
        reasons = "; ".join(f"{o.source}: {o.reason}" for o in outcomes)
        return ScaleChoice(None, outcomes, (), f"no metric scale ({reasons or 'no source'})")
    chosen = available[0]
    conflicts = []
    for other in available[1:]:
        gap = abs(math.log(other.metres_per_unit / chosen.metres_per_unit))
        errors = math.hypot(_finite(chosen.standard_error), _finite(other.standard_error))
        if gap > max(max_disagreement, 3.0 * errors):
            conflicts.append(other.source)
    summary = (
        f"{chosen.source}: {chosen.metres_per_unit:.6g} m/unit, spread {chosen.spread:.3g}, "
        f"{chosen.constraints} constraints"
    )
    if conflicts:
        summary += f"; disagrees with {', '.join(conflicts)} by more than {max_disagreement:.0%}"
    return ScaleChoice(chosen, outcomes, tuple(conflicts), summary)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


@dataclass(frozen=True)
class SmoothedScale:
    """The smoothed scale of one window.

    ``metres_per_unit`` for this window; ``spread``: relative spread of the accepted history
    (1.4826·MAD of its log values, NaN below two); ``windows``: accepted measurements in the
    history, ``constraints`` their constraints in total; ``source`` of the latest accepted
    one; ``accepted``: whether this window's measurement was used, else ``reason``.
    """

    metres_per_unit: float
    spread: float
    windows: int
    constraints: int
    source: str
    accepted: bool
    reason: str = ""


class ScaleSmoother:
    """Running median over windows, in log space, with outlier gating.

    Each window's network scale is its own, so what is smoothed is the measurement relative
    to a ``reference`` that carries the window-to-window scale changes: the window's scale
    relative to the persistent world (world units per window unit, from the shared-view
    chain of :class:`~dvlt_ros.pipeline.world.WorldAligner`). The smoothed quantity, metres per
    world unit, is then constant, and the window's value is
    ``median(history) · reference``. Pass ``reference=1`` only for a backend whose scale is
    stable across windows.

    A measurement further than ``max(min_gate, gate_sigmas · σ)`` (log units, σ combining
    the history's spread and the measurement's standard error) from the running median is
    rejected; after ``reset_after`` rejections in a row the history restarts from the new
    value (the scale really changed).
    """

    def __init__(
        self,
        history: int = 9,
        gate_sigmas: float = 4.0,
        min_gate: float = 0.03,
        reset_after: int = 3,
    ) -> None:
        if history < 1 or reset_after < 1 or gate_sigmas <= 0 or min_gate < 0:
            raise ValueError("history and reset_after must be >= 1, gate_sigmas > 0, min_gate >= 0")
        self.gate_sigmas = float(gate_sigmas)
        self.min_gate = float(min_gate)
        self.reset_after = int(reset_after)
        self._logs: deque[float] = deque(maxlen=history)
        self._constraints: deque[int] = deque(maxlen=history)
        self._source = ""
        self._rejected = 0

    def reset(self) -> None:
        """Forget the history (a new world)."""
        self._logs.clear()
        self._constraints.clear()
        self._rejected = 0

    def update(self, outcome: ScaleOutcome | None, reference: float = 1.0) -> SmoothedScale | None:
        """Add this window's measurement (or its absence); None until one was accepted."""
        if not (math.isfinite(reference) and reference > 0):
            raise ValueError(f"reference must be a positive scale, got {reference}")
        log_ref = math.log(reference)
        if not isinstance(outcome, ScaleEstimate):
            reason = "no measurement" if outcome is None else f"{outcome.source}: {outcome.reason}"
            return self._state(log_ref, False, reason)
        value = math.log(outcome.metres_per_unit) - log_ref
        if self._logs:
            centre = float(np.median(self._logs))
            sigma = math.hypot(_finite(self._spread()), _finite(outcome.standard_error))
            gate = max(self.min_gate, self.gate_sigmas * sigma)
            if abs(value - centre) > gate:
                self._rejected += 1
                if self._rejected < self.reset_after:
                    return self._state(
                        log_ref,
                        False,
                        f"{outcome.source} measurement {math.exp(value - centre) - 1:+.1%} from "
                        f"the running median, beyond the {gate:.1%} gate",
                    )
                self.reset()
        self._rejected = 0
        self._logs.append(value)
        self._constraints.append(outcome.constraints)
        self._source = outcome.source
        return self._state(log_ref, True, "")

    def _spread(self) -> float:
        if len(self._logs) < 2:
            return math.nan
        logs = np.asarray(self._logs)
        return _MAD_TO_SIGMA * float(np.median(np.abs(logs - np.median(logs))))

    def _state(self, log_ref: float, accepted: bool, reason: str) -> SmoothedScale | None:
        if not self._logs:
            return None
        return SmoothedScale(
            math.exp(float(np.median(self._logs)) + log_ref),
            self._spread(),
            len(self._logs),
            int(sum(self._constraints)),
            self._source,
            accepted,
            reason,
        )


class MetricScale(Protocol):
    """Source of metric scale: metres per window unit for a reconstruction, or None."""

    def metres_per_unit(self, window: ViewWindow, reconstruction: Reconstruction) -> float | None:
        """Metres per unit of ``reconstruction`` (None when this window gives no estimate)."""


class RigBaselineScale:
    """:class:`MetricScale` from known rig extrinsics keyed by camera name: the estimate of
    :func:`rig_scale` (``key="camera"``), None when it has none."""

    def __init__(self, base_from_camera: dict[str, np.ndarray], min_baseline: float = 0.05):
        self.base_from_camera = {
            name: np.asarray(pose, dtype=np.float64) for name, pose in base_from_camera.items()
        }
        self.min_baseline = float(min_baseline)

    def metres_per_unit(self, window: ViewWindow, reconstruction: Reconstruction) -> float | None:
        outcome = rig_scale(
            window, reconstruction, self.base_from_camera, key="camera",
            min_baseline=self.min_baseline,
        )
        return outcome.metres_per_unit if isinstance(outcome, ScaleEstimate) else None
