"""``dvlt-ros process`` with loop closure on a ``--path loop`` sample bag: the optimised
trajectories and map cloud beside the chained ones, both ATEs in summary.json; the CLI's
default (on), ``--describe-checkpoint`` and the report when no descriptor is available."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from bag_helpers import IMG_SIZE, SAMPLE, make_sample, parameters

from dvlt_core.io.checkpoint import save_checkpoint
from dvlt_core.mapping import EncoderDescriber
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights
from dvlt_ros.bags.evaluation import read_tum
from dvlt_ros.bags.issues import IssueLog
from dvlt_ros.bags.processor import BagProcessor, GroundTruth, ProcessOptions
from dvlt_ros.bags.sample import (
    GT_TOPIC,
    SampleBagConfig,
    ground_truth_backend,
    write_sample_bag,
)
from dvlt_ros.bags.source import BagSource
from dvlt_ros.cli import process as process_cli
from dvlt_ros.cli import sample_bag as sample_cli

pytest.importorskip("gtsam")
CAMERA = "cam_front_left"


@pytest.fixture(scope="module")
def small_model(reference_dir):
    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return model.eval()


def test_a_loop_bag_is_closed_and_both_ates_are_reported(tmp_path, small_model):
    # 1.1 laps in 44 snapshots, 35 s: the end revisits the start beyond the 10 s exclusion.
    bag_path = write_sample_bag(tmp_path / "loop", replace(
        SAMPLE, frames=44, rate_hz=44 / 35.2, path="loop", laps=1.1))
    out = tmp_path / "out"
    issues = IssueLog()
    with BagSource(bag_path, issues) as bag:
        params = parameters(bag, loop_closure=True, loop_verify_per_cycle=2)
        processor = BagProcessor(
            bag, ground_truth_backend(bag, IMG_SIZE, unscaled=True), params, out,
            ProcessOptions(ground_truth=GroundTruth(tf_topic=GT_TOPIC)), issues=issues,
            describer=EncoderDescriber(small_model, IMG_SIZE))
        summary = processor.run()
    assert summary["complete"] and summary["windows"] == 44
    loops = summary["loop_closure"]
    assert loops["state"] == "on" and loops["keyframes"] == 44 and loops["accepted"] >= 1
    assert loops["verified"] == loops["accepted"] + sum(loops["rejected"].values())

    files = summary["files"]
    assert files["trajectories_optimised"] == {
        f"trajectory_{c}_optimised.tum": 44 for c in ("cam_front_left", "cam_front_right")}
    assert files["clouds_optimised"]["cloud_optimised.ply"] > 0
    chained_stamps, _ = read_tum(out / f"trajectory_{CAMERA}.tum")
    optimised_stamps, _ = read_tum(out / f"trajectory_{CAMERA}_optimised.tum")
    np.testing.assert_array_equal(optimised_stamps, chained_stamps)
    assert (out / "cloud_optimised.ply").stat().st_size > 0

    # Both ATEs, against the bag's ground-truth TF and the sample's ground_truth.tum.
    (evaluation,) = summary["evaluation"]
    assert evaluation["matched"] == 88 and evaluation["optimised"]["matched"] == 88
    assert np.isfinite(evaluation["ate_rmse"]) and np.isfinite(
        evaluation["optimised"]["ate_rmse"])
    truth = summary["grounding"]["ground_truth"]["ground_truth.tum"]
    assert (out / "ground_truth.tum").exists()
    for key in ("ate_se3_rmse", "ate_sim3_rmse", "ate_se3_rmse_optimised",
                "ate_sim3_rmse_optimised"):
        assert np.isfinite(truth[key]), key
    assert json.loads((out / "summary.json").read_text())["loop_closure"] == loops


class _VerificationFails:
    """A backend that raises on a window made only of views it has seen before: loop
    verification (the current keyframe with an old one); every live window brings a new
    snapshot. Like a backend out of memory on those windows."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self._seen: set[bytes] = set()
        self.failures = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def infer(self, images, num_steps=None):
        keys = {view.numpy().tobytes() for view in images[0]}
        if keys <= self._seen:
            self.failures += 1
            raise RuntimeError("out of memory")
        self._seen |= keys
        return self._backend.infer(images, num_steps)


def test_a_failing_loop_verification_is_reported_and_the_run_goes_on(tmp_path, small_model):
    # 40 snapshots in 35.2 s: none at exactly a pose of the first lap (its images would be
    # the same as that snapshot's).
    bag_path = write_sample_bag(tmp_path / "loop", replace(
        SAMPLE, frames=40, rate_hz=40 / 35.2, path="loop", laps=1.1))
    issues = IssueLog()
    with BagSource(bag_path, issues) as bag:
        backend = _VerificationFails(ground_truth_backend(bag, IMG_SIZE, unscaled=True))
        processor = BagProcessor(
            bag, backend, parameters(bag, loop_closure=True, loop_verify_per_cycle=2),
            tmp_path / "out", issues=issues, describer=EncoderDescriber(small_model, IMG_SIZE))
        summary = processor.run()
    assert backend.failures >= 1, summary
    assert summary["complete"] and summary["windows"] == 40
    assert summary["events"]["loop_closure_error"] == backend.failures
    assert summary["loop_closure"]["keyframes"] == 40
    assert summary["loop_closure"]["accepted"] == 0
    stamps, _ = read_tum(tmp_path / "out" / f"trajectory_{CAMERA}.tum")
    assert len(stamps) == 40


def test_cli_turns_loop_closure_on_and_describes_with_a_checkpoint(tmp_path, small_model,
                                                                    capsys):
    bag = make_sample(tmp_path / "bag")
    common = [str(bag), "--backend", "ground_truth", "--quiet", "-p", f"img_size:={IMG_SIZE}",
              "-p", "num_steps:=2", "-p", "window_timesteps:=2", "-p",
              "keyframe_min_spacing:=0.0"]
    # The ground-truth backend gives no descriptors: reported once, the run completes.
    assert process_cli.main([*common, "--out", str(tmp_path / "plain")]) == 0
    err = capsys.readouterr().err
    assert err.count("loop_closure_unavailable") == 1 and "--describe-checkpoint" in err
    summary = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert summary["parameters"]["loop_closure"] is True
    assert summary["loop_closure"]["state"] == "unavailable"
    assert "trajectories_optimised" not in summary["files"]

    checkpoint = save_checkpoint(small_model, tmp_path / "ckpt")
    assert process_cli.main([*common, "--out", str(tmp_path / "described"),
                             "--describe-checkpoint", str(checkpoint)]) == 0
    err = capsys.readouterr().err
    assert "loop_closure_unavailable" not in err and "loop closure on" in err
    summary = json.loads((tmp_path / "described" / "summary.json").read_text())
    assert summary["loop_closure"]["keyframes"] == SAMPLE.frames
    assert (tmp_path / "described" / f"trajectory_{CAMERA}_optimised.tum").exists()

    assert process_cli.main([*common, "--out", str(tmp_path / "off"),
                             "-p", "loop_closure:=false"]) == 0
    summary = json.loads((tmp_path / "off" / "summary.json").read_text())
    assert summary["loop_closure"] == {"state": "off", "map_frame": "map"}


def test_sample_bag_drives_the_loop_for_the_given_laps(tmp_path):
    assert sample_cli.main([str(tmp_path / "two"), "--path", "loop", "--laps", "2",
                            "--frames", "8", "--width", "64", "--height", "48"]) == 0
    with BagSource(tmp_path / "two") as bag:
        from dvlt_ros.bags.sample import read_sample_config

        config = read_sample_config(bag)
    assert config.laps == 2
    rig = config.rig()
    # Two laps in 8 snapshots: snapshot i and i + 4 are at the same place.
    for i in range(4):
        np.testing.assert_allclose(rig.camera_pose(CAMERA, config.time_s(i)),
                                   rig.camera_pose(CAMERA, config.time_s(i + 4)), atol=1e-9)
    with pytest.raises(ValueError, match="laps must be > 0"):
        SampleBagConfig(path="loop", laps=0)
