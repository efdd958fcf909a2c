"""`dvlt-ros demo`: the node in-process on the synthetic multi-camera sequence, with the
ground-truth backend (exact outputs), a small deterministic checkpoint, and offline with
the default checkpoint (a clear message naming the override)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from node_harness import save_small_checkpoint

from dvlt_core.model import DEFAULT_NUM_STEPS
from dvlt_core.synthetic import default_rig
from dvlt_ros.cli.main import main


def _tum(path):
    rows = [line.split() for line in path.read_text().splitlines() if not line.startswith("#")]
    return np.array(rows, dtype=np.float64)


def test_demo_with_ground_truth_writes_exact_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["demo", "--backend", "ground_truth", "--num-cameras", "2", "--width", "112",
               "--height", "84", "--img-size", "112", "--snapshots", "3", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cycle       K       S" in printed and "in metres" in printed
    rows = list(csv.DictReader((out / "cycles.csv").read_text().splitlines()))
    assert [int(r["num_steps"]) for r in rows] == [DEFAULT_NUM_STEPS] * 3
    assert [int(r["num_views"]) for r in rows] == [2, 4, 4]
    for stage in ("sync_wait_ms", "preprocess_ms", "inference_ms", "pose_fit_ms", "publish_ms"):
        assert all(float(r[stage]) >= 0 for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["units"] == "m" and run["fused_points"] > 0 and len(run["cycles"]) == 3
    assert (out / "points.ply").read_bytes().startswith(b"ply\n")

    # The trajectory is the reference camera's: relative motion equals the rig's.
    rig = default_rig(width=112, height=84, num_cameras=2)
    tum = _tum(out / "trajectory.tum")
    assert tum.shape == (3, 8)
    truth = [rig.camera_pose(rig.names[0], 0.5 * i)[:3, 3] for i in range(3)]
    np.testing.assert_allclose(np.linalg.norm(tum[1:, 1:4] - tum[0, 1:4], axis=1),
                               np.linalg.norm(np.array(truth[1:]) - truth[0], axis=1), atol=1e-3)
    # ground_truth.tum: the same stamps, the true poses in the node's own world (exact here).
    np.testing.assert_allclose(_tum(out / "ground_truth.tum"), tum, atol=1e-3)


def test_demo_grounded_by_the_rig_in_odom(tmp_path, capsys):
    """`--backend ground_truth_unscaled --scale-source rig --anchor tf`: the node hears the
    demo's /tf_static and /tf; trajectory.tum is metric in odom and matches ground_truth.tum
    without any alignment, within the backend's noise (2 mm per view) plus 3 % scale error
    over the rig's 0.5 m of travel."""
    out = tmp_path / "out"
    rc = main(["demo", "--backend", "ground_truth_unscaled", "--num-cameras", "3", "--width",
               "168", "--height", "126", "--img-size", "168", "--snapshots", "4",
               "--scale-source", "rig", "--anchor", "tf", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "in metres, in frame 'odom'" in printed and "scale: rig:" in printed
    run = json.loads((out / "run.json").read_text())
    assert run["units"] == "m" and run["world_frame"] == "odom"
    assert run["parameters"]["scale_source"] == "rig"
    tum, truth = _tum(out / "trajectory.tum"), _tum(out / "ground_truth.tum")
    assert tum.shape == truth.shape == (4, 8)
    np.testing.assert_array_equal(tum[:, 0], truth[:, 0])
    rig = default_rig(width=168, height=126, num_cameras=3)
    np.testing.assert_allclose(truth[:, 1:4], [rig.camera_pose(rig.names[0], 0.5 * i)[:3, 3]
                                               for i in range(4)], atol=1e-6)
    errors = np.linalg.norm(tum[:, 1:4] - truth[:, 1:4], axis=1)
    assert errors.max() < 5 * 0.002 + 0.03 * 0.5


def test_demo_with_a_small_checkpoint(tmp_path, reference_dir, capsys):
    checkpoint = save_small_checkpoint(tmp_path / "ckpt", reference_dir, img_size=56)
    out = tmp_path / "out"
    rc = main(["demo", "--checkpoint", str(checkpoint), "--device", "cpu", "--num-cameras", "2",
               "--width", "56", "--height", "42", "--snapshots", "2", "--num-steps", "2",
               "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"model: {checkpoint}" in printed and "user checkpoint" in printed
    rows = list(csv.DictReader((out / "cycles.csv").read_text().splitlines()))
    assert [int(r["num_steps"]) for r in rows] == [2, 2]
    assert all(float(r["inference_ms"]) > 0 for r in rows)


@pytest.mark.parametrize("source", ["default", "env"])
def test_demo_offline_names_the_override(tmp_path, source):
    """No network and no cached weights: the demo stops at once and says how to override
    the checkpoint (here in a child process, where the Hub client reads HF_HUB_OFFLINE)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env.pop("DVLT_CHECKPOINT", None)
    if source == "env":
        env["DVLT_CHECKPOINT"] = str(tmp_path / "missing")
    proc = subprocess.run(
        [sys.executable, "-m", "dvlt_ros.cli.main", "demo", "--snapshots", "1",
         "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "--checkpoint" in proc.stderr and "DVLT_CHECKPOINT" in proc.stderr
    expected = "nvidia/dvlt" if source == "default" else str(tmp_path / "missing")
    assert f"cannot load the model from '{expected}'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    listing = capsys.readouterr().out
    for name in ("demo", "replay", "process", "sample-bag"):
        assert name in listing
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--checkpoint" in capsys.readouterr().out
