"""``dvlt-ros process`` on generated sample bags (sqlite3 and mcap) with the ground-truth
backend: the outputs exist, are readable with rosbags alone, carry the source stamps, and
the trajectories match the ground truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from bag_helpers import IMG_SIZE, PARAMS, SAMPLE, make_sample, process, rewrite_bag
from rosbags.highlevel import AnyReader

from dvlt_ros.bags.evaluation import read_tum
from dvlt_ros.bags.msgtypes import typestore
from dvlt_ros.bags.processor import BagProcessor, GroundTruth, ProcessOptions
from dvlt_ros.bags.sample import GT_TOPIC, SCENE_TOPIC, ground_truth_backend, ground_truth_poses
from dvlt_ros.bags.source import BagSource
from dvlt_ros.cli import process as process_cli
from dvlt_ros.pipeline.settings import load_parameters

CAMERAS = ("cam_front_left", "cam_front_right")
STAMPS = [SAMPLE.stamp_ns(i) for i in range(SAMPLE.frames)]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {storage: make_sample(root / storage, storage) for storage in ("mcap", "sqlite3")}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_process_writes_readable_outputs_at_source_stamps(bags, storage, tmp_path):
    out = tmp_path / "out"
    options = ProcessOptions(ground_truth=GroundTruth(tf_topic=GT_TOPIC))
    summary, issues = process(bags[storage], out, options)

    assert summary["complete"] and summary["error"] is None and not issues.issues
    assert summary["windows"] == SAMPLE.frames  # lossless: one window per snapshot
    assert summary["frames"]["read"] == 2 * SAMPLE.frames
    assert summary["k"]["counts"] == {"2": SAMPLE.frames}
    assert summary["time_to_first_output_s"] > 0
    assert json.loads((out / "summary.json").read_text())["windows"] == SAMPLE.frames
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # staging gone

    # The output bag: readable by rosbags without rclpy, stamped with the source stamps.
    expected = {"/reconstruct_node/points", "/tf", "/diagnostics", "/reconstruct_node/trajectory"}
    expected |= {f"/reconstruct_node/{c}/{k}" for c in CAMERAS
                 for k in ("depth", "confidence", "camera_info")}
    with AnyReader([out / "reconstruction"], default_typestore=typestore()) as reader:
        assert expected <= {c.topic for c in reader.connections}
        seen: dict[str, list[int]] = {}
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/reconstruct_node/frusta":
                header = msg.markers[0].header
            else:
                header = msg.transforms[0].header if conn.topic == "/tf" else msg.header
            stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
            assert stamp == log_ns
            seen.setdefault(conn.topic, []).append(stamp)
            if conn.topic == "/reconstruct_node/cam_front_left/depth":
                assert (msg.encoding, msg.height, msg.width) == ("32FC1", 120, 160)
                assert header.frame_id == "cam_front_left_optical_frame_dvlt"
            if conn.topic == "/reconstruct_node/points":
                assert msg.width > 1000 and header.frame_id == "dvlt_world"
    for topic in expected - {"/diagnostics"}:
        assert sorted(seen[topic]) == STAMPS, topic

    # Fused cloud, TUM trajectories, evaluation against the ground-truth TF: exact.
    header = (out / "cloud.ply").read_bytes()[:300].decode("ascii", "replace")
    assert f"element vertex {summary['files']['clouds']['cloud.ply']}" in header
    assert summary["files"]["clouds"]["cloud.ply"] > 1000
    for camera in CAMERAS:
        stamps, poses = read_tum(out / f"trajectory_{camera}.tum")
        assert np.allclose(stamps, STAMPS, atol=1000)
        _, truth = ground_truth_poses(SAMPLE, camera)
        # World = first reference camera; its relative motion is the ground truth's.
        rel_est = np.linalg.inv(poses[0]) @ poses[-1]
        rel_gt = np.linalg.inv(truth[0]) @ truth[-1]
        assert np.allclose(rel_est, rel_gt, atol=1e-5)
    (evaluation,) = summary["evaluation"]
    assert evaluation["matched"] == 2 * SAMPLE.frames and evaluation["unmatched"] == 0
    assert evaluation["ate_rmse"] < 1e-5 and abs(evaluation["scale"] - 1) < 1e-6
    for scores in evaluation["cameras"].values():
        assert scores["rpe_trans_rmse"] < 1e-5 and scores["rpe_rot_mean_deg"] < 1e-3


def test_cli_process_refuses_existing_output_and_overwrites_on_request(bags, tmp_path, capsys):
    out = tmp_path / "result"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    args = [str(bags["mcap"]), "--out", str(out), "--backend", "ground_truth", "--quiet",
            "-p", "img_size:=112", "-p", "num_steps:=3", "-p", "window_timesteps:=2",
            "-p", "keyframe_min_spacing:=0.0"]
    assert process_cli.main(args) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "old.txt").exists()

    tum = tmp_path / "gt.tum"
    stamps, poses = ground_truth_poses(SAMPLE, CAMERAS[1])
    from dvlt_core.io.writers import write_tum

    write_tum(tum, [s / 1e9 for s in stamps], poses)
    assert process_cli.main([*args, "--overwrite", "--gt-tum", f"{CAMERAS[1]}={tum}"]) == 0
    err = capsys.readouterr().err
    assert "complete: 6 windows" in err and "ATE rmse" in err
    assert not (out / "old.txt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"]["counts"] == {"3": SAMPLE.frames}
    (evaluation,) = summary["evaluation"]
    assert list(evaluation["cameras"]) == [CAMERAS[1]] and evaluation["ate_rmse"] < 1e-5


def test_sigint_keeps_a_valid_partial_result(tmp_path):
    """Ctrl-C: the run stops after the current window, finalises the outputs it has and
    says so (exit 130)."""
    bag = make_sample(tmp_path / "long", frames=12)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvlt_ros.cli.process", str(bag), "--out", str(out),
         "--backend", "ground_truth", "-p", "img_size:=112", "-p", "num_steps:=1",
         "-p", "window_timesteps:=1"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen = ""
    while "windows=2" not in seen:
        char = proc.stderr.read(1)
        assert char, f"process ended early: {seen[-2000:]}"
        seen += char
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(60) == 130, rest
    assert "INTERRUPTED, partial result kept" in rest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and not summary["complete"]
    assert 2 <= summary["windows"] < 12
    assert summary["files"]["trajectories"]["trajectory_cam_front_left.tum"] == summary["windows"]
    with AnyReader([out / "reconstruction"], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/reconstruct_node/points"] == summary["windows"]


def test_fused_cloud_keeps_the_most_confident_point_per_voxel():
    from dvlt_ros.pipeline.accumulate import FusedCloud

    rng = np.random.default_rng(0)
    cloud = FusedCloud(0.1)
    batches = [(rng.uniform(-1, 1, (500, 3)).astype(np.float32),
                rng.integers(0, 255, (500, 3), dtype=np.uint8),
                rng.uniform(1, 5, 500).astype(np.float32)) for _ in range(4)]
    for points, colors, confidence in batches:
        cloud.add(0, points, colors, confidence)
    points = np.concatenate([b[0] for b in batches])
    confidence = np.concatenate([b[2] for b in batches])
    best: dict[tuple, int] = {}
    for i, cell in enumerate(map(tuple, np.floor(points / 0.1).astype(int))):
        if cell not in best or confidence[i] > confidence[best[cell]]:
            best[cell] = i
    kept = cloud.arrays(0)[0]
    assert len(cloud) == len(best)
    assert {tuple(p) for p in kept.tolist()} == {tuple(points[i].tolist())
                                                 for i in best.values()}


def test_fused_cloud_memory_is_bounded_by_coarsening():
    from dvlt_ros.pipeline.accumulate import FusedCloud

    rng = np.random.default_rng(1)
    cloud = FusedCloud(0.01, max_points=2000)
    for i in range(20):  # a rig exploring new ground every window
        points = rng.uniform(0, 1, (1000, 3)).astype(np.float32) + np.float32(i)
        cloud.add(0, points, np.zeros((1000, 3), np.uint8), np.ones(1000, np.float32))
        assert len(cloud) <= 2000
    assert cloud.coarsenings > 0 and cloud.voxel_size == 0.01 * 2**cloud.coarsenings
    kept = cloud.arrays(0)[0]
    cells = np.floor(kept / cloud.voxel_size).astype(np.int64)
    assert len(np.unique(cells, axis=0)) == len(kept)  # one point per (coarse) voxel


def test_cli_defaults_give_way_to_the_params_file(bags, tmp_path):
    """The CLI's loop_closure default (on) applies only where neither the params file nor
    a flag sets it."""
    params = tmp_path / "params.yaml"
    params.write_text("reconstruct_node:\n  ros__parameters:\n    loop_closure: false\n"
                      "    backend: ground_truth\n    img_size: 112\n    num_steps: 2\n"
                      "    window_timesteps: 2\n    keyframe_min_spacing: 0.0\n")
    out = tmp_path / "result"
    assert process_cli.main([str(bags["mcap"]), "--out", str(out), "--quiet",
                             "--params-file", str(params)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["loop_closure"] is False
    assert summary["loop_closure"]["state"] == "off"


def test_params_file_compiles_the_torch_model_and_sets_its_threads(tmp_path, reference_dir,
                                                                    monkeypatch):
    """torch_compile and torch_threads in --params-file reach the run: the torch backend is
    built compiled (compile_model is recorded, not run: compiling takes minutes) and the
    model runs with that many intra-op threads on the thread that runs the bag, whose own
    count is back afterwards."""
    import threading

    import torch

    from dvlt_core.backends import TorchBackend
    from dvlt_core.backends import torch_backend as torch_backend_module
    from dvlt_core.io.checkpoint import save_checkpoint
    from dvlt_core.model import DVLTModel
    from dvlt_core.testing import load_deterministic_weights

    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    compiled, calls = [], []
    monkeypatch.setattr(torch_backend_module, "compile_model", compiled.append)
    eager_infer = TorchBackend.infer

    def counting_infer(self, images, num_steps=None):
        calls.append((threading.current_thread(), torch.get_num_threads()))
        return eager_infer(self, images, num_steps)

    monkeypatch.setattr(TorchBackend, "infer", counting_infer)
    here = torch.get_num_threads()
    threads = here + 1
    params = tmp_path / "params.yaml"
    params.write_text(
        "reconstruct_node:\n  ros__parameters:\n    backend: torch\n"
        f"    checkpoint: {checkpoint}\n    device: cpu\n    torch_compile: true\n"
        f"    torch_threads: {threads}\n    img_size: 56\n    num_steps: 1\n"
        "    window_timesteps: 1\n    loop_closure: false\n")
    bag = make_sample(tmp_path / "bag", frames=2)
    out = tmp_path / "out"
    assert process_cli.main([str(bag), "--out", str(out), "--quiet",
                             "--params-file", str(params)]) == 0
    assert len(compiled) == 1 and isinstance(compiled[0], DVLTModel)
    assert calls == [(threading.current_thread(), threads)] * 2
    assert torch.get_num_threads() == here
    summary = json.loads((out / "summary.json").read_text())
    assert summary["windows"] == 2
    assert (summary["parameters"]["torch_compile"], summary["parameters"]["torch_threads"]) == (
        True, threads)


def test_gt_tf_topic_writes_ground_truth_beside_the_trajectories_for_any_bag(bags, tmp_path):
    """Not only sample bags: a bag without the sample's scene topic, with a ground-truth
    TF topic, gets ground_truth.tum (the reference camera's poses from that TF at its
    reconstructed stamps) beside its evaluation."""
    plain = rewrite_bag(bags["mcap"], tmp_path / "plain",
                        lambda messages: (m for m in messages if m.topic != SCENE_TOPIC))
    out = tmp_path / "out"
    with BagSource(bags["mcap"]) as sample:
        backend = ground_truth_backend(sample, IMG_SIZE)
    with BagSource(plain) as bag:
        params = load_parameters(None, {"cameras": list(CAMERAS), **PARAMS})
        summary = BagProcessor(bag, backend, params, out, ProcessOptions(
            ground_truth=GroundTruth(tf_topic=GT_TOPIC))).run()
    assert summary["files"]["ground_truth"] == {"ground_truth.tum": SAMPLE.frames}
    stamps, poses = read_tum(out / "ground_truth.tum")
    chained, _ = read_tum(out / f"trajectory_{CAMERAS[0]}.tum")
    np.testing.assert_array_equal(stamps, chained)
    _, truth = ground_truth_poses(SAMPLE, CAMERAS[0])
    # TUM text keeps 9 significant digits of the metre-sized poses.
    np.testing.assert_allclose(poses, truth, atol=1e-6)
    item = summary["grounding"]["ground_truth"]["ground_truth.tum"]
    assert item["camera"] == CAMERAS[0] and GT_TOPIC in item["frame"]
    (evaluation,) = summary["evaluation"]
    assert evaluation["matched"] == 2 * SAMPLE.frames
