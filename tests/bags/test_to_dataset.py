"""The rosbag2 → dataset converter on bags generated from the synthetic rig with ``rosbags``."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rosbags")
from bag_fixtures import STAMPS, T, camera_topics, write_robot_bag

from dvlt_core.io.image_decode import ImageDecodeError
from dvlt_core.testing.images import constant_png
from dvlt_core.training.data import find_folder_scenes
from dvlt_ros.bags.decode import CameraTopics
from dvlt_ros.bags.to_dataset import BagConversion, convert_bag, decode_color
from dvlt_ros.cli.bag_to_dataset import main


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "robot_run"
    return path, write_robot_bag(path)


@pytest.mark.parametrize("source", ["tf", "odometry"])
def test_bag_converts_to_posed_rgbd_frames(tmp_path, recorded, source):
    bag, rig = recorded
    conversion = BagConversion(camera_topics(rig), pose_source=source, fixed_frame="map",
                               odometry_topic="/odom" if source == "odometry" else None)
    report = convert_bag(bag, tmp_path, conversion)
    assert report.written == len(STAMPS) * 2 and not report.skipped
    (scene,) = find_folder_scenes(tmp_path)
    assert [r.camera for r in scene.records[:2]] == ["/cam_front_left/image_rect",
                                                     "/cam_front_right/image_rect"]
    for i, record in enumerate(scene.records):
        name, t = rig.names[i % 2], STAMPS[i // 2]
        view, frame = rig.render(name, t), scene.frame(i)
        assert record.stamp == pytest.approx(t)
        np.testing.assert_array_equal(frame.image, view.image)
        np.testing.assert_allclose(frame.depth, view.depth, atol=6e-4)
        np.testing.assert_allclose(frame.c2w, rig.camera_pose(name, t), atol=1e-3)
        k = rig.camera(name).k.copy()
        k[:2, 2] += 0.5  # ROS pixel centres are integers; the dataset's are at +0.5
        np.testing.assert_allclose(frame.intrinsics, k)


def test_tolerance_and_subsampling(tmp_path, recorded):
    bag, rig = recorded
    strict = BagConversion(camera_topics(rig), tolerance=0.0035)  # camera 0's depth is 4 ms late
    report = convert_bag(bag, tmp_path / "a", strict)
    assert report.written == len(STAMPS)
    assert report.skipped["no depth within tolerance"] == len(STAMPS)
    sparse = BagConversion(camera_topics(rig), min_interval=0.35)
    assert convert_bag(bag, tmp_path / "b", sparse).written == 2 * 3


def test_cli_and_errors(tmp_path, recorded, capsys):
    bag, rig = recorded
    cam = f"/{rig.names[0]}/image_rect,/{rig.names[0]}/camera_info,/{rig.names[0]}/depth"
    assert main([str(bag), str(tmp_path), "--camera", cam, "--name", "run1"]) == 0
    assert "wrote 6 frames" in capsys.readouterr().out
    assert (tmp_path / "run1" / "scene.json").is_file()
    assert main([str(bag), str(tmp_path), "--camera", "/nope,/nope_info,/nope_depth"]) == 2
    assert "has no topic" in capsys.readouterr().err
    assert main([str(bag), str(tmp_path), "--camera", cam, "--fixed-frame", "earth"]) == 2
    assert "not connected" in capsys.readouterr().err


def test_compressed_images_are_decoded_within_their_camera_info_size():
    def compressed(data: bytes):
        header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                          frame_id="cam")
        return T["sensor_msgs/msg/CompressedImage"](header=header, format="png",
                                                    data=np.frombuffer(data, np.uint8))

    rgb = np.random.default_rng(0).integers(0, 256, (36, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    kind = "sensor_msgs/msg/CompressedImage"
    np.testing.assert_array_equal(decode_color(compressed(buffer.getvalue()), kind, 48 * 36), rgb)
    # The 79 KB PNG of 9000x9000: refused from its header, never decoded.
    with pytest.raises(ImageDecodeError, match="9000x9000: more than the 1728 pixels"):
        decode_color(compressed(constant_png(9000, 9000)), kind, 48 * 36)


def test_truncated_bag_converts_what_is_readable(tmp_path, recorded):
    bag, rig = recorded
    cut = shutil.copytree(bag, tmp_path / "cut")
    (file,) = cut.glob("*.mcap")
    os.truncate(file, int(file.stat().st_size * 0.7))
    report = convert_bag(cut, tmp_path / "out", BagConversion(camera_topics(rig)))
    assert 0 < report.written < 2 * len(STAMPS)
    assert any("truncated" in warning for warning in report.warnings)
    assert len(find_folder_scenes(tmp_path / "out")[0]) == report.written


def test_the_cli_says_when_a_bag_was_cut(tmp_path, recorded, capsys):
    bag, rig = recorded
    cut = shutil.copytree(bag, tmp_path / "cut")
    (file,) = cut.glob("*.mcap")
    os.truncate(file, int(file.stat().st_size * 0.7))
    cam = ",".join([camera_topics(rig)[0].image, camera_topics(rig)[0].info,
                    camera_topics(rig)[0].depth])
    assert main([str(cut), str(tmp_path / "out"), "--camera", cam]) == 0
    assert capsys.readouterr().out.startswith("PARTIAL (the bag is damaged or cut")


def test_topics_of_another_type_are_refused(tmp_path, recorded):
    bag, rig = recorded
    (front, _) = camera_topics(rig)
    wrong = CameraTopics("/odom", front.info, front.depth)
    with pytest.raises(ValueError, match="/odom is nav_msgs/msg/Odometry, expected"):
        convert_bag(bag, tmp_path, BagConversion([wrong]))


def test_converting_again_replaces_the_whole_scene(tmp_path, recorded):
    """A scene is staged and replaces the old one whole: no image of an earlier run is left
    beside the new scene.json, and no staging folder stays behind."""
    bag, rig = recorded
    first = convert_bag(bag, tmp_path, BagConversion(camera_topics(rig)))
    sparse = convert_bag(bag, tmp_path, BagConversion(camera_topics(rig), min_interval=0.35))
    assert first.scene == sparse.scene and sparse.written < first.written
    assert len(list((sparse.scene / "images").iterdir())) == sparse.written
    assert len(list((sparse.scene / "depth").iterdir())) == sparse.written
    assert [p.name for p in tmp_path.iterdir()] == [sparse.scene.name]
