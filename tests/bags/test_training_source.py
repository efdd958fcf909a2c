"""The ``rosbag`` training source: one ``dvlt-train`` command on a bag, and its conversion cache."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rosbags")
from bag_fixtures import STAMPS, camera_topics, write_robot_bag

from dvlt_core.cli.train import build_config, main
from dvlt_core.model.dinov2 import BACKBONE_SPECS, BackboneSpec
from dvlt_core.training.data import scenes_from_source
from dvlt_ros.bags.decode import CameraTopics
from dvlt_ros.bags.training_source import parse_cameras, parse_conversion, rosbag_scenes

RECIPES = Path(__file__).resolve().parents[2] / "training"
TINY = ["model.patch_embed=dinov2_tiny_test", "model.embed_dim=64", "model.num_heads=1",
        "data.image_size=28", "model.img_size=28", "data.min_epoch_length=4",
        "data.images_per_element=[2,3]", "data.images_per_batch=6", "trainer.progress_bar=false"]
SOURCE_LOG = "dvlt_ros.bags.training_source"


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "robot_run"
    return path, write_robot_bag(path)


@pytest.fixture
def tiny_encoder(monkeypatch):
    # A 1-layer test encoder: no named DINOv2 size trains fast enough on a 2-core CPU.
    monkeypatch.setitem(BACKBONE_SPECS, "dinov2_tiny_test", BackboneSpec(64, 1, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cameras_arg(rig) -> str:
    return " ".join(f"{c.image},{c.info},{c.depth}" for c in camera_topics(rig))


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir())


def test_one_command_trains_on_a_bag_and_reuses_the_conversion(tmp_path, bag, tiny_encoder,
                                                               caplog):
    path, rig = bag
    recipe = tmp_path / "robot.yaml"  # the shape of finetune-rosbag.yaml on the tiny CPU recipe
    recipe.write_text(f"base: {RECIPES / 'tiny-cpu.yaml'}\n"
                      "data:\n  sources:\n    - {type: rosbag, path: null, cameras: null}\n")
    cache = tmp_path / "cache"
    command = [*TINY, f"data.sources[0].path={path}",
               f"data.sources[0].cameras={_cameras_arg(rig)}",
               f"data.sources[0].cache_dir={cache}"]
    caplog.set_level(logging.INFO, logger=SOURCE_LOG)

    assert main(["--config", str(recipe), "--output-dir", str(tmp_path / "run1"), *command,
                 "trainer.max_train_steps=2", "trainer.checkpointing_steps=2"]) == 0
    assert (tmp_path / "run1" / "checkpoint-2" / "model.safetensors").is_file()
    assert (tmp_path / "run1" / "final_model" / "model.safetensors").is_file()
    (entry,) = _entries(cache)
    info = json.loads((entry / "conversion.json").read_text())
    assert info["frames"] == 2 * len(STAMPS) and info["options"]["pose_source"] == "tf"
    assert "converting" in caplog.text
    scene_json = entry / path.stem / "scene.json"
    written = scene_json.stat().st_mtime_ns

    caplog.clear()
    assert main(["--config", str(recipe), "--output-dir", str(tmp_path / "run2"), *command,
                 "trainer.max_train_steps=1"]) == 0
    assert (tmp_path / "run2" / "final_model").is_dir()
    assert "using the cached conversion" in caplog.text and "converting" not in caplog.text
    assert _entries(cache) == [entry] and scene_json.stat().st_mtime_ns == written


def test_options_and_bag_changes_get_their_own_cache_entry(tmp_path, bag, monkeypatch):
    path, rig = bag
    monkeypatch.setenv("DVLT_CACHE_DIR", str(tmp_path / "default"))
    spec = {"path": str(path), "cameras": _cameras_arg(rig)}
    (scene,) = rosbag_scenes(spec)
    cache = tmp_path / "default" / "rosbag-scenes"
    assert len(scene) == 2 * len(STAMPS) and len(_entries(cache)) == 1

    (sparse,) = rosbag_scenes({**spec, "min_interval": 0.35})  # a conversion option
    assert len(sparse) == 2 * 3 and len(_entries(cache)) == 2
    (clipped,) = rosbag_scenes({**spec, "max_depth": 1.0})  # applied on load: no new entry
    assert len(_entries(cache)) == 2
    assert clipped.frame(0).depth.max() <= 1.0 < scene.frame(0).depth.max()

    copy = tmp_path / "copy" / path.name
    shutil.copytree(path, copy)  # copy2 keeps the modification times: the same fingerprint
    rosbag_scenes({**spec, "path": [str(copy)]})
    assert len(_entries(cache)) == 2
    for file in copy.iterdir():
        os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    rosbag_scenes({**spec, "path": [str(copy)]})
    assert len(_entries(cache)) == 3


def test_converter_errors_leave_no_cache_entry(tmp_path, bag):
    path, rig = bag
    source = {"type": "rosbag", "path": str(path), "cache_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="has no topic"):
        scenes_from_source({**source, "cameras": "/nope/image,/nope/info,/nope/depth"})
    with pytest.raises(ValueError, match="not connected"):
        scenes_from_source({**source, "cameras": _cameras_arg(rig),
                            "pose": {"fixed_frame": "earth"}})
    with pytest.raises(FileNotFoundError, match="not found"):
        scenes_from_source({**source, "path": str(tmp_path / "missing"),
                            "cameras": _cameras_arg(rig)})
    assert _entries(tmp_path) == []


def test_dvlt_train_reports_bag_errors_without_a_traceback(tmp_path, bag, tiny_encoder, capsys):
    path, _ = bag
    recipe = tmp_path / "robot.yaml"
    recipe.write_text(f"base: {RECIPES / 'tiny-cpu.yaml'}\n"
                      "data:\n  sources:\n    - {type: rosbag, path: null, cameras: null}\n")
    code = main(["--config", str(recipe), *TINY, f"data.sources[0].path={path}",
                 "data.sources[0].cameras=/nope/image,/nope/info,/nope/depth",
                 f"data.sources[0].cache_dir={tmp_path / 'cache'}",
                 "--output-dir", str(tmp_path / "run")])  # options after overrides work too
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("dvlt-train: data:") and "has no topic" in err


def test_camera_spec_forms_and_refusals():
    front = CameraTopics("/front/image", "/front/info", "/front/depth")
    side = CameraTopics("/side/image", "/side/info", "/side/depth")
    expected = [front, side]
    assert parse_cameras("/front/image,/front/info,/front/depth "
                         "/side/image,/side/info,/side/depth") == expected
    assert parse_cameras(["/front/image,/front/info,/front/depth",
                          {"image": "/side/image", "info": "/side/info",
                           "depth": "/side/depth"}]) == expected
    with pytest.raises(ValueError, match="quote each camera"):  # an unquoted YAML flow list
        parse_cameras(["/front/image", "/front/info", "/front/depth"])
    with pytest.raises(ValueError, match="exactly the keys"):
        parse_cameras([{"image": "/front/image", "info": "/front/info"}])
    with pytest.raises(ValueError, match="empty"):
        parse_cameras("")
    with pytest.raises(ValueError, match=r"data.sources\[0\].path"):
        rosbag_scenes({"cameras": "/a,/b,/c"})
    with pytest.raises(ValueError, match=r"data.sources\[0\].cameras"):
        rosbag_scenes({"path": "bags/run_01"})
    with pytest.raises(ValueError, match="unknown keys"):
        rosbag_scenes({"path": "bags/run_01", "cameras": "/a,/b,/c", "topics": []})
    with pytest.raises(ValueError, match="pose"):
        parse_conversion({"cameras": "/a,/b,/c", "pose": {"frame": "map"}})
    with pytest.raises(ValueError, match="seven numbers"):
        parse_conversion({"cameras": "/a,/b,/c", "pose": {"extrinsics": {"cam": [0, 0, 0]}}})


def test_finetune_rosbag_recipe_takes_the_one_command_overrides():
    config = build_config(str(RECIPES / "finetune-rosbag.yaml"), [
        "data.sources[0].path=[bags/run_01, bags/run_02]",
        "data.sources[0].cameras=/cam/image_rect,/cam/camera_info,/cam/aligned_depth",
        "data.sources[0].pose.source=odometry", "data.sources[0].pose.odometry_topic=/odom",
        "data.sources[0].pose.extrinsics={cam_optical_frame: [0.1, 0, 0.2, 0, 0, 0, 1]}",
    ])
    assert config.init.checkpoint == "nvidia/dvlt" and config.init.strict
    assert config.finetune.mode == "all_heads"
    assert config.model_config().depth_head_type == "conv"
    assert config.loss.build().cam.enabled and config.data.images_per_element == [2, 8]
    (source,) = config.data.sources
    assert source["type"] == "rosbag" and source["path"] == ["bags/run_01", "bags/run_02"]
    conversion = parse_conversion(source)
    assert conversion.cameras == [CameraTopics("/cam/image_rect", "/cam/camera_info",
                                               "/cam/aligned_depth")]
    assert (conversion.pose_source, conversion.odometry_topic) == ("odometry", "/odom")
    assert conversion.min_interval == 0.2 and conversion.fixed_frame == "map"
    np.testing.assert_allclose(conversion.base_from_camera["cam_optical_frame"][:3, 3],
                               [0.1, 0, 0.2])


def test_a_truncated_bag_trains_on_what_is_readable_and_records_the_warning(tmp_path, bag):
    path, rig = bag
    cut = shutil.copytree(path, tmp_path / "cut" / path.name)
    (file,) = cut.glob("*.mcap")
    os.truncate(file, int(file.stat().st_size * 0.7))
    (scene,) = rosbag_scenes({"path": str(cut), "cameras": _cameras_arg(rig),
                              "cache_dir": str(tmp_path / "cache")})
    (entry,) = _entries(tmp_path / "cache")
    info = json.loads((entry / "conversion.json").read_text())
    assert 0 < len(scene) == info["frames"] < 2 * len(STAMPS)
    assert any("truncated" in warning for warning in info["warnings"])
