"""Damaged and unusual bags: truncated files, a missing metadata.yaml, missing or
mistyped topics, missing camera_info, gaps and time jumps. Each gives a clear error or
warning, and whatever could be reconstructed is kept."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pytest
from bag_helpers import SAMPLE, make_sample, parameters, process, rewrite_bag
from rosbags.highlevel import AnyReader

from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.msgtypes import typestore
from dvlt_ros.bags.processor import BagProcessor
from dvlt_ros.bags.sample import ground_truth_backend
from dvlt_ros.bags.source import BagSource


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("sample") / "bag")


def _truncate(bag, tmp_path, suffix: str, fraction: float):
    copy = shutil.copytree(bag, tmp_path / "cut")
    (file,) = copy.glob(f"*{suffix}")
    os.truncate(file, int(file.stat().st_size * fraction))
    return copy


def test_truncated_mcap_is_processed_up_to_the_cut(sample, tmp_path):
    cut = _truncate(sample, tmp_path, ".mcap", 0.6)
    summary, issues = process(cut, tmp_path / "out", backend_from=sample)
    assert "truncated" in issues.codes()
    assert "readable" in next(i.message for i in issues.issues if i.code == "truncated")
    assert not summary["complete"] and summary["error"] is None
    assert 1 <= summary["windows"] < SAMPLE.frames
    with AnyReader([tmp_path / "out" / "reconstruction"], default_typestore=typestore()) as r:
        counts = {c.topic: c.msgcount for c in r.connections}
    assert counts["/reconstruct_node/points"] == summary["windows"]


def test_truncated_sqlite_bag_is_a_clear_error(tmp_path):
    bag = make_sample(tmp_path / "db", storage="sqlite3", frames=3)
    cut = _truncate(bag, tmp_path, ".db3", 0.5)
    with pytest.raises(BagError, match=r"cannot open bag .*sqlite3 .* \.recover"):
        BagSource(cut)


def test_bag_without_metadata_is_read_from_its_storage_file(sample, tmp_path):
    copy = shutil.copytree(sample, tmp_path / "nometa")
    (copy / "metadata.yaml").unlink()
    summary, issues = process(copy, tmp_path / "out")
    assert "metadata_missing" in issues.codes()
    assert summary["windows"] == SAMPLE.frames


def test_missing_and_mistyped_camera_topics_are_errors(sample, tmp_path):
    with BagSource(sample) as bag:
        backend = ground_truth_backend(bag, 112)
        params = parameters(bag, cameras=["cam_front_left", "rear"])
        with pytest.raises(BagError, match=r"/rear/image_raw are not in .* image topics are: "
                                           r"/cam_front_left/image_raw, "):
            BagProcessor(bag, backend, params, tmp_path / "a")
        params = parameters(bag, image_transport="compressed")
        with pytest.raises(BagError, match="has the raw images: set image_transport:=raw"):
            BagProcessor(bag, backend, params, tmp_path / "b")
    remap = {"/cam_front_right/image_raw": "/elsewhere/image_raw",
             "/cam_front_right/camera_info": "/cam_front_right/image_raw"}
    mistyped = "/cam_front_right/image_raw has type sensor_msgs/msg/CameraInfo, expected"
    with BagSource(sample, remap=remap) as bag, pytest.raises(BagError, match=mistyped):
        BagProcessor(bag, backend, parameters(bag), tmp_path / "c")
    assert not [p for p in tmp_path.iterdir()]  # nothing written, no staging left
    with pytest.raises(BagError, match="does not exist"):
        BagSource(tmp_path / "nothing")
    issues = IssueLog()
    BagSource(sample, issues, remap={"/front/image": "/cam0/image_raw"})
    assert "unknown_topic" in issues.codes()


def test_missing_camera_info_falls_back_to_predicted_intrinsics(tmp_path):
    bag = make_sample(tmp_path / "noinfo", frames=3, camera_info=False)
    summary, issues = process(bag, tmp_path / "out", use_input_camera_info=True)
    warnings = [i for i in issues.issues if i.code == "missing_camera_info"]
    assert len(warnings) == 2 and "predicted intrinsics" in warnings[0].message
    assert summary["windows"] == 3


def test_gaps_and_time_jumps_are_reported_and_start_a_new_world(tmp_path):
    config = replace(SAMPLE, frames=10)
    source = make_sample(tmp_path / "src", frames=config.frames)
    dropped = {config.stamp_ns(i) for i in (5, 6, 7)}
    replayed = [config.stamp_ns(i) for i in range(4)]
    shift = config.stamp_ns(config.frames) - config.start_ns

    def damage(messages):
        kept = [m for m in messages if m.log_ns not in dropped]
        # The first four snapshots again, recorded later: their stamps jump back 1.8 s.
        again = [replace(m, log_ns=m.log_ns + shift) for m in messages
                 if m.log_ns in replayed and m.topic.startswith("/cam")]
        return kept + again

    bag = rewrite_bag(source, tmp_path / "damaged", damage)
    summary, issues = process(bag, tmp_path / "out", backend_from=source)
    gap = next(i for i in issues.issues if i.code == "gap")
    assert "no frame for 0.800 s" in gap.message and gap.topic.endswith("/image_raw")
    assert "time_jump" in issues.codes()
    assert summary["events"]["time_jump_reset"] >= 1
    assert summary["windows"] == 7 + 4 and summary["epochs"] == [0, 1]
    out = tmp_path / "out"
    assert summary["files"]["trajectories"]["trajectory_cam_front_left.epoch1.tum"] == 4
    assert (out / "cloud.epoch1.ply").exists() and (out / "cloud.ply").exists()
