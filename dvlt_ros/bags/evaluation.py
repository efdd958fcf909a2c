"""Score reconstructed camera trajectories against ground truth: ATE and RPE after a
similarity (Sim(3)) alignment.

Ground truth comes from TF messages in a bag (a dynamic topic such as
``/ground_truth/tf`` plus the bag's ``/tf_static``, chained up to their root frame and
interpolated at the image stamps) or from TUM files (``timestamp tx ty tz qx qy qz qw``,
camera-to-world of one camera's optical frame).

Metrics (poses are camera-to-world of the OpenCV optical frame):

* one Sim(3) (Umeyama: rotation, translation, scale; ``align="se3"`` fixes the scale to 1)
  maps all estimated camera positions of all cameras onto the ground truth at once, since
  the cameras share one reconstructed world;
* ATE: RMSE (and mean, median, max) of the aligned position errors, ground-truth units;
* RPE between consecutive reconstructed frames of a camera: RMSE of the relative
  translation error (aligned scale) and mean relative rotation error in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dvlt_core.eval.alignment import umeyama_alignment
from dvlt_core.geometry import Sim3, rigid_from_translation_quaternion
from dvlt_ros.bags.issues import BagError

PoseLookup = Callable[[int], np.ndarray | None]


def _rotation_angle_deg(rotation: np.ndarray) -> float:
    cos = (np.trace(rotation) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns, camera-to-world 4x4) of a TUM trajectory file."""
    stamps, poses = [], []
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BagError(f"cannot read TUM file {path}: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        values = line.split()
        if len(values) != 8:
            raise BagError(f"{path}:{number}: a TUM line has 8 numbers "
                           f"(timestamp tx ty tz qx qy qz qw), got {len(values)}")
        try:
            t, *rest = (float(v) for v in values)
        except ValueError as exc:
            raise BagError(f"{path}:{number}: {exc}") from None
        if not all(math.isfinite(v) for v in (t, *rest)):
            raise BagError(f"{path}:{number}: every number must be finite, got {line!r}")
        if math.hypot(*rest[3:]) < 1e-9:
            raise BagError(f"{path}:{number}: the quaternion (qx qy qz qw) is zero")
        pose = rigid_from_translation_quaternion(rest[:3], rest[3:])
        stamps.append(round(t * 1e9))
        poses.append(pose)
    if not poses:
        raise BagError(f"{path} holds no poses")
    order = np.argsort(stamps)
    return np.array(stamps, np.int64)[order], np.stack(poses)[order]


def tum_lookup(stamps: np.ndarray, poses: np.ndarray, tolerance_ns: int) -> PoseLookup:
    """Nearest pose of a TUM trajectory within ``tolerance_ns`` of the stamp."""
    def lookup(stamp_ns: int) -> np.ndarray | None:
        i = int(np.searchsorted(stamps, stamp_ns))
        best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)),
                   key=lambda j: abs(int(stamps[j]) - stamp_ns))
        return poses[best] if abs(int(stamps[best]) - stamp_ns) <= tolerance_ns else None

    return lookup


@dataclass(frozen=True)
class CameraScore:
    camera: str
    matched: int
    ate_rmse: float
    ate_mean: float
    ate_median: float
    ate_max: float
    rpe_trans_rmse: float | None
    rpe_rot_mean_deg: float | None


@dataclass(frozen=True)
class Evaluation:
    """Scores of all cameras after one shared alignment (``scale``: estimate -> GT)."""

    align: str
    scale: float
    matched: int
    ate_rmse: float
    cameras: tuple[CameraScore, ...]
    unmatched: int

    def as_dict(self) -> dict[str, object]:
        return {
            "align": self.align,
            "scale": self.scale,
            "matched": self.matched,
            "unmatched": self.unmatched,
            "ate_rmse": self.ate_rmse,
            "cameras": {c.camera: {k: v for k, v in c.__dict__.items() if k != "camera"}
                        for c in self.cameras},
        }

    def table(self) -> str:
        """A plain-text table of the scores."""
        rows = [f"{'camera':<24} {'poses':>5} {'ATE rmse':>10} {'ATE max':>10} "
                f"{'RPE trans':>10} {'RPE rot°':>9}"]
        for c in self.cameras:
            rpe_t = "n/a" if c.rpe_trans_rmse is None else f"{c.rpe_trans_rmse:.4g}"
            rpe_r = "n/a" if c.rpe_rot_mean_deg is None else f"{c.rpe_rot_mean_deg:.3f}"
            rows.append(f"{c.camera:<24} {c.matched:>5} {c.ate_rmse:>10.4g} {c.ate_max:>10.4g} "
                        f"{rpe_t:>10} {rpe_r:>9}")
        rows.append(f"all cameras: ATE rmse {self.ate_rmse:.4g} over {self.matched} poses "
                    f"({self.align} alignment, scale {self.scale:.4g}); "
                    f"{self.unmatched} poses without ground truth")
        return "\n".join(rows)


def evaluate(
    estimated: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ground_truth: Mapping[str, PoseLookup],
    align: str = "sim3",
) -> Evaluation:
    """Align and score ``estimated[camera] = (stamps ns, poses)`` against
    ``ground_truth[camera](stamp) -> pose | None``."""
    if align not in ("sim3", "se3"):
        raise ValueError(f"align must be sim3 or se3, got {align!r}")
    pairs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    unmatched = 0
    for camera, (stamps, poses) in estimated.items():
        lookup = ground_truth.get(camera)
        est, gt = [], []
        for stamp, pose in zip(stamps, poses, strict=True):
            truth = lookup(int(stamp)) if lookup is not None else None
            if truth is None:
                unmatched += 1
                continue
            est.append(pose)
            gt.append(truth)
        if est:
            pairs[camera] = (est, gt)
    all_est = np.array([p[:3, 3] for est, _ in pairs.values() for p in est])
    all_gt = np.array([p[:3, 3] for _, gt in pairs.values() for p in gt])
    if len(all_est) < 3:
        raise BagError(f"only {len(all_est)} reconstructed poses have ground truth (need 3): "
                       "check the ground-truth topic/file, its frames and its stamps")
    if np.ptp(all_est, axis=0).max() < 1e-9:
        raise BagError("the reconstructed camera positions do not move, so no alignment is "
                       "defined (windows sharing no view with earlier ones keep the placement: "
                       "use window_timesteps >= 2)")
    rotation, translation, scale = (t.numpy() for t in umeyama_alignment(
        torch.from_numpy(all_est.T), torch.from_numpy(all_gt.T), with_scale=align == "sim3"))
    est_to_gt = Sim3(rotation, translation, float(scale))

    scores, all_errors = [], []
    for camera, (est, gt) in pairs.items():
        est_a = [est_to_gt.apply_c2w(p) for p in est]
        errors = np.array([np.linalg.norm(e[:3, 3] - g[:3, 3]) for e, g in zip(est_a, gt,
                                                                                strict=True)])
        all_errors.append(errors)
        trans, rots = [], []
        for i in range(len(est_a) - 1):
            rel_e = np.linalg.inv(est_a[i]) @ est_a[i + 1]
            rel_g = np.linalg.inv(gt[i]) @ gt[i + 1]
            delta = np.linalg.inv(rel_g) @ rel_e
            trans.append(np.linalg.norm(delta[:3, 3]))
            rots.append(_rotation_angle_deg(delta[:3, :3]))
        scores.append(CameraScore(
            camera, len(errors), float(np.sqrt(np.mean(errors**2))), float(errors.mean()),
            float(np.median(errors)), float(errors.max()),
            float(np.sqrt(np.mean(np.square(trans)))) if trans else None,
            float(np.mean(rots)) if rots else None,
        ))
    errors = np.concatenate(all_errors)
    return Evaluation(align, est_to_gt.scale, len(errors), float(np.sqrt(np.mean(errors**2))),
                      tuple(scores), unmatched)
