"""ATE/RPE after Sim(3) alignment, TUM files and the ground-truth TF tree."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvlt_core.io.writers import write_tum
from dvlt_core.synthetic import default_rig
from dvlt_ros.bags.evaluation import evaluate, read_tum, tum_lookup
from dvlt_ros.bags.issues import BagError


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _trajectories(n: int = 12):
    rig = default_rig(64, 48, num_cameras=2)
    stamps = np.arange(n, dtype=np.int64) * 100_000_000 + 5_000_000_000
    return {name: (stamps, np.stack([rig.camera_pose(name, 0.3 * i) for i in range(n)]))
            for name in rig.names}


def _similarity(poses: np.ndarray, scale: float) -> np.ndarray:
    """The same trajectory in another world frame with another unit (inverse of what the
    evaluation must recover)."""
    rot, shift = _rotation(np.array([0.2, -0.5, 1.0]), 0.7), np.array([3.0, -1.0, 0.5])
    out = poses.copy()
    out[:, :3, :3] = rot @ poses[:, :3, :3]
    out[:, :3, 3] = scale * poses[:, :3, 3] @ rot.T + shift
    return out


def test_sim3_alignment_recovers_scale_and_gives_zero_error():
    truth = _trajectories()
    estimated = {c: (s, _similarity(p, 0.25)) for c, (s, p) in truth.items()}
    lookups = {c: tum_lookup(s, p, 0) for c, (s, p) in truth.items()}
    result = evaluate(estimated, lookups)
    assert result.matched == 24 and result.unmatched == 0
    assert result.scale == pytest.approx(4.0, rel=1e-9)
    assert result.ate_rmse < 1e-9
    for camera in result.cameras:
        assert camera.rpe_trans_rmse < 1e-9 and camera.rpe_rot_mean_deg < 1e-5
    # SE(3) cannot undo the scale: the error stays.
    assert evaluate(estimated, lookups, align="se3").ate_rmse > 0.1
    assert "all cameras: ATE rmse" in result.table()


def test_noise_shows_in_ate_and_rpe_and_unmatched_poses_are_counted():
    truth = _trajectories()
    rng = np.random.default_rng(0)
    estimated = {}
    for camera, (stamps, poses) in truth.items():
        noisy = poses.copy()
        noisy[:, :3, 3] += rng.normal(scale=0.01, size=(len(poses), 3))
        estimated[camera] = (stamps + np.where(np.arange(len(stamps)) == 3, 7, 0), noisy)
    lookups = {c: tum_lookup(s, p, 0) for c, (s, p) in truth.items()}
    result = evaluate(estimated, lookups)
    assert result.unmatched == 2  # one shifted stamp per camera
    assert 0.003 < result.ate_rmse < 0.03
    assert all(c.rpe_trans_rmse > 0.003 for c in result.cameras)


def test_too_few_or_static_poses_are_refused():
    truth = _trajectories(2)
    lookups = {c: tum_lookup(s, p, 0) for c, (s, p) in truth.items()}
    with pytest.raises(BagError, match="need 3"):
        evaluate({"cam_front_left": truth["cam_front_left"]}, lookups)
    stamps, poses = _trajectories()["cam_front_left"]
    still = np.repeat(poses[:1], len(poses), axis=0)
    with pytest.raises(BagError, match="do not move"):
        evaluate({"cam_front_left": (stamps, still)},
                 {"cam_front_left": tum_lookup(stamps, poses, 0)})


def test_tum_round_trip_and_tolerance(tmp_path):
    stamps, poses = _trajectories()["cam_front_right"]
    path = tmp_path / "gt.tum"
    write_tum(path, stamps / 1e9, poses)
    read_stamps, read_poses = read_tum(path)
    assert np.array_equal(read_stamps, stamps)
    assert np.allclose(read_poses, poses, atol=1e-7)
    lookup = tum_lookup(read_stamps, read_poses, tolerance_ns=1_000_000)
    assert np.array_equal(lookup(int(stamps[4]) + 900_000), read_poses[4])
    assert lookup(int(stamps[4]) + 2_000_000) is None
    bad = tmp_path / "bad.tum"
    bad.write_text("1.0 2.0 3.0\n")
    with pytest.raises(BagError, match="8 numbers"):
        read_tum(bad)
