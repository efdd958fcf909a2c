"""Damaged and unusual bags: truncated files, a missing metadata.yaml, missing or
mistyped topics, missing camera_info, gaps and time jumps. Each gives a clear error or
warning, and whatever could be reconstructed is kept."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
from bag_helpers import SAMPLE, make_sample, parameters, process, rewrite_bag
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import CompressedImage, Image

from dvlt_core.testing.images import constant_png
from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.msgtypes import COMPRESSED_IMAGE, IMAGE, typestore
from dvlt_ros.bags.processor import BagProcessor
from dvlt_ros.bags.sample import ground_truth_backend
from dvlt_ros.bags.source import BagSource
from dvlt_ros.cli import process as process_cli
from dvlt_ros.conversions.image import array_to_image, image_to_rgb8
from dvlt_ros.conversions.transforms import stamp_from_ns

CAMERAS = ("cam_front_left", "cam_front_right")
CHEAP = ["-p", "img_size:=112", "-p", "num_steps:=2", "-p", "window_timesteps:=2",
         "-p", "keyframe_min_spacing:=0.0"]


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


# ---------------------------------------------------------------- images in bags
def _recode_images(source, dst, recode):
    """``source`` rewritten with every camera image passed through ``recode(msg, index)``
    (index: the image's position on its topic), which returns the message to write."""
    seen: dict[str, int] = {}

    def transform(messages):
        for message in messages:
            if message.msgtype == IMAGE:
                index = seen[message.topic] = seen.get(message.topic, -1) + 1
                msg = recode(deserialize_message(message.raw, Image), message.topic, index)
                message = replace(message, raw=serialize_message(msg),
                                  msgtype=COMPRESSED_IMAGE if isinstance(
                                      msg, CompressedImage) else IMAGE)
            yield message

    return rewrite_bag(source, dst, transform)


def _uyvy(msg, topic, index):
    """The image as packed UYVY with its grey levels as luma (no chroma)."""
    grey = image_to_rgb8(msg).mean(axis=2).round().astype(np.uint8)
    packed = np.full((*grey.shape, 2), 128, np.uint8)
    packed[..., 1] = grey
    return array_to_image(packed, "uyvy", msg.header)


def _bayer_gbrg(msg, topic, index):
    rgb = image_to_rgb8(msg)
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for cell, channel in enumerate((1, 2, 0, 1)):  # g b / r g
        mosaic[cell // 2 :: 2, cell % 2 :: 2] = rgb[cell // 2 :: 2, cell % 2 :: 2, channel]
    return array_to_image(mosaic, "bayer_gbrg8", msg.header)


@pytest.mark.parametrize("recode", [_uyvy, _bayer_gbrg], ids=["uyvy", "bayer_gbrg8"])
def test_yuv422_and_bayer_bags_are_converted_and_reconstructed(sample, tmp_path, recode):
    bag = _recode_images(sample, tmp_path / "recoded", recode)
    summary, _ = process(bag, tmp_path / "out")
    assert summary["windows"] == SAMPLE.frames and summary["complete"]
    assert all(c["rejected"] == 0 for c in summary["frames"]["per_camera"].values())


def test_an_unsupported_encoding_exits_2_with_the_counts(sample, tmp_path, capsys):
    def nv21(msg, topic, index):
        return Image(header=msg.header, height=msg.height, width=msg.width, encoding="nv21",
                     step=msg.width, data=bytes(msg.width * msg.height * 3 // 2))

    bag = _recode_images(sample, tmp_path / "nv21", nv21)
    code = process_cli.main([str(bag), "--out", str(tmp_path / "out"), "--quiet",
                             "--backend", "ground_truth", *CHEAP])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line = err.splitlines()[-1]  # the last word: why nothing was made
    assert line.startswith("[error] no window was reconstructed: every image was rejected")
    assert "cam_front_left: 6 received, 6 rejected" in line and "'nv21'" in line
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"]["per_camera"]["cam_front_right"]["rejected"] == SAMPLE.frames


def test_compressed_bombs_in_a_bag_are_refused_and_counted(sample, tmp_path):
    def bomb(msg, topic, index):
        data = constant_png(9000, 9000) if index % 2 else constant_png(10**5, 10**5, rows=1)
        return CompressedImage(header=msg.header, format="png", data=data)

    bag = _recode_images(sample, tmp_path / "bombs", bomb)
    remap = {f"/{c}/image_raw": f"/{c}/image_raw/compressed" for c in CAMERAS}
    summary, _ = process(bag, tmp_path / "out", backend_from=sample, remap=remap,
                         image_transport="compressed")
    assert summary["windows"] == 0
    per_camera = summary["frames"]["per_camera"]
    assert all(c["rejected"] == c["received"] == SAMPLE.frames for c in per_camera.values())
    assert "decompression bomb" in summary["frames"]["first_rejection"]
    assert summary["events"]["image_rejected"] == 2 * SAMPLE.frames


def test_lone_bad_stamps_are_refused_without_a_new_world(sample, tmp_path):
    far = 3600 * 10**9

    def stamps(msg, topic, index):
        if topic.startswith("/cam_front_right") and index == 2:
            msg.header.stamp = stamp_from_ns(0)
        elif topic.startswith("/cam_front_left") and index == 4:
            msg.header.stamp = stamp_from_ns(SAMPLE.stamp_ns(4) + far)
        return msg

    bag = _recode_images(sample, tmp_path / "stamps", stamps)
    summary, issues = process(bag, tmp_path / "out", backend_from=sample)
    assert summary["epochs"] == [0] and "time_jump" not in issues.codes()
    assert summary["events"]["stamp_rejected"] == 2
    per_camera = summary["frames"]["per_camera"]
    assert [c["rejected"] for c in per_camera.values()] == [1, 1]
    assert summary["windows"] == SAMPLE.frames - 2
