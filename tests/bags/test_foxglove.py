"""Foxglove: the mcap that ``dvlt-ros process`` writes opens with Foxglove's own reader
(``mcap``) and every message decodes with its ROS 2 decoder (``mcap-ros2-support``), and the
layout ``config/foxglove/dvlt.json`` shows exactly topics the node (here: process) and the
input bag carry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bag_helpers import make_sample

from dvlt_ros.cli import process as process_cli

make_reader = pytest.importorskip("mcap.reader", reason="mcap is not installed").make_reader
DecoderFactory = pytest.importorskip(
    "mcap_ros2.decoder", reason="mcap-ros2-support is not installed (the 'test' extra)"
).DecoderFactory

LAYOUT = Path(__file__).resolve().parents[2] / "config" / "foxglove" / "dvlt.json"


def _topics_in_layout(layout: dict) -> set[str]:
    """Every topic a panel of the layout subscribes to."""
    topics: set[str] = set()
    for config in layout["configById"].values():
        topics |= set(config.get("topics", {}))
        topics |= {v for k, v in config.get("imageMode", {}).items() if k.endswith("Topic")}
        if "topicToRender" in config:
            topics.add(config["topicToRender"])
    return topics


def _panels_in_tree(node) -> set[str]:
    if isinstance(node, str):
        return {node}
    return _panels_in_tree(node["first"]) | _panels_in_tree(node["second"])


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """(input bag, the mcap file written by ``dvlt-ros process``)."""
    root = tmp_path_factory.mktemp("foxglove")
    bag = make_sample(root / "sample", "mcap")
    out = root / "out"
    assert process_cli.main([str(bag), "--out", str(out), "--backend", "ground_truth",
                             "--quiet", "-p", "img_size:=112", "-p", "num_steps:=2",
                             "-p", "window_timesteps:=2", "-p", "keyframe_min_spacing:=0.0"]) == 0
    (mcap,) = (out / "reconstruction").glob("*.mcap")
    return bag, mcap


def _decoded(path: Path) -> dict[str, list]:
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        messages: dict[str, list] = {}
        for _schema, channel, _message, decoded in reader.iter_decoded_messages():
            messages.setdefault(channel.topic, []).append(decoded)
    return messages


def test_the_processed_mcap_decodes_with_foxglove_reader(processed):
    _, mcap = processed
    messages = _decoded(mcap)
    expected = {"/reconstruct_node/points", "/tf", "/diagnostics", "/reconstruct_node/trajectory",
                "/reconstruct_node/frusta"}
    expected |= {f"/reconstruct_node/{c}/{k}" for c in ("cam_front_left", "cam_front_right")
                 for k in ("depth", "confidence", "camera_info")}
    assert expected <= set(messages)
    cloud = messages["/reconstruct_node/points"][0]
    assert cloud.header.frame_id == "dvlt_world" and cloud.width > 1000
    assert {f.name for f in cloud.fields} >= {"x", "y", "z", "rgb"}
    assert len(cloud.data) == cloud.width * cloud.height * cloud.point_step
    depth = messages["/reconstruct_node/cam_front_left/depth"][0]
    assert (depth.encoding, depth.height, depth.width) == ("32FC1", 120, 160)
    assert len(depth.data) == depth.step * depth.height
    assert messages["/tf"][0].transforms[0].header.frame_id
    assert messages["/diagnostics"][0].status


def test_the_layout_shows_topics_that_exist(processed):
    bag, mcap = processed
    layout = json.loads(LAYOUT.read_text())
    assert _panels_in_tree(layout["layout"]) == set(layout["configById"])
    (source,) = bag.glob("*.mcap") if bag.is_dir() else (bag,)
    available = set(_decoded(mcap)) | set(_decoded(source))
    assert _topics_in_layout(layout) <= available
    assert layout["configById"]["3D!dvlt"]["followTf"] == "dvlt_world"
