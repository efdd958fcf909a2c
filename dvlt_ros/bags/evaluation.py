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

import bisect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dvlt_core.eval.alignment import umeyama_alignment
from dvlt_ros.bags.issues import BagError
from dvlt_ros.conversions.transforms import matrix_from_quaternion, quaternion_from_matrix

PoseLookup = Callable[[int], np.ndarray | None]


def _rotation_angle_deg(rotation: np.ndarray) -> float:
    cos = (np.trace(rotation) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    return (math.sin((1 - a) * theta) * q0 + math.sin(a * theta) * q1) / math.sin(theta)


class TfTree:
    """Static and time-stamped transforms; :meth:`lookup` gives ``root_from_frame``."""

    def __init__(self, max_interval_ns: int = 500_000_000) -> None:
        self.max_interval_ns = max_interval_ns
        self._static: dict[str, tuple[str, np.ndarray]] = {}
        self._dynamic: dict[str, tuple[str, list[int], list[np.ndarray]]] = {}

    def add(self, parent: str, child: str, parent_from_child: np.ndarray,
            stamp_ns: int | None = None) -> None:
        """Add one transform; ``stamp_ns`` None makes it static."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if stamp_ns is None:
            self._static[child] = (parent, parent_from_child)
            return
        _, stamps, poses = self._dynamic.setdefault(child, (parent, [], []))
        i = bisect.bisect(stamps, stamp_ns)
        stamps.insert(i, stamp_ns)
        poses.insert(i, parent_from_child)

    def add_messages(self, messages: Iterable, static: bool) -> None:
        """Add every transform of TFMessage objects."""
        for msg in messages:
            for tf in msg.transforms:
                t, r = tf.transform.translation, tf.transform.rotation
                pose = np.eye(4)
                pose[:3, :3] = matrix_from_quaternion(np.array([r.x, r.y, r.z, r.w]))
                pose[:3, 3] = (t.x, t.y, t.z)
                stamp = tf.header.stamp.sec * 1_000_000_000 + tf.header.stamp.nanosec
                self.add(tf.header.frame_id, tf.child_frame_id, pose, None if static else stamp)

    @property
    def frames(self) -> set[str]:
        return set(self._static) | set(self._dynamic)

    def _edge(self, child: str, stamp_ns: int) -> tuple[str, np.ndarray] | None:
        if child in self._static:
            return self._static[child]
        parent, stamps, poses = self._dynamic[child]
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return parent, poses[i]
        if i == 0 or i == len(stamps) or stamps[i] - stamps[i - 1] > self.max_interval_ns:
            return None
        a = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
        p0, p1 = poses[i - 1], poses[i]
        pose = np.eye(4)
        pose[:3, 3] = (1 - a) * p0[:3, 3] + a * p1[:3, 3]
        q = _slerp(quaternion_from_matrix(p0[:3, :3]), quaternion_from_matrix(p1[:3, :3]), a)
        pose[:3, :3] = matrix_from_quaternion(q)
        return parent, pose

    def lookup(self, frame: str, stamp_ns: int) -> tuple[str, np.ndarray] | None:
        """(root frame, root_from_frame) at ``stamp_ns``; None where a time-stamped link
        has no samples around the stamp."""
        frame = frame.lstrip("/")
        pose = np.eye(4)
        seen = set()
        while frame in self._static or frame in self._dynamic:
            if frame in seen:
                raise BagError(f"the ground-truth TF tree has a cycle through {frame!r}")
            seen.add(frame)
            edge = self._edge(frame, stamp_ns)
            if edge is None:
                return None
            frame, parent_from_child = edge
            pose = parent_from_child @ pose
        return frame, pose


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns, camera-to-world 4x4) of a TUM trajectory file."""
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
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
        pose = np.eye(4)
        pose[:3, 3] = rest[:3]
        pose[:3, :3] = matrix_from_quaternion(np.array(rest[3:]))
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
    scale = float(scale)

    def aligned(pose: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = rotation @ pose[:3, :3]
        out[:3, 3] = scale * rotation @ pose[:3, 3] + translation
        return out

    scores, all_errors = [], []
    for camera, (est, gt) in pairs.items():
        est_a = [aligned(p) for p in est]
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
    return Evaluation(align, scale, len(errors), float(np.sqrt(np.mean(errors**2))),
                      tuple(scores), unmatched)
