"""``BagPlayer`` over real DDS (loopback, the session's domain): /clock, latched
/tf_static, topic selection, remapping, start offset, loop, unknown types, and the clear
error of a lossless replay without a node to acknowledge."""

from __future__ import annotations

import pytest
from bag_helpers import SAMPLE, make_sample
from rclpy.serialization import serialize_message
from ros_graph import Graph
from rosbags.rosbag2 import Writer
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.msgtypes import typestore
from dvlt_ros.bags.source import BagSource
from dvlt_ros.node_support.qos import LATCHED_QOS


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("play") / "bag", frames=4)


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_play_publishes_clock_images_and_latched_tf_static(graph, sample):
    images = graph.listen(Image, "/front/image_raw")
    clock = graph.listen(Clock, "/clock")
    bag = BagSource(sample, remap={"/cam_front_left/image_raw": "/front/image_raw"})
    player = graph.player(bag, rate=4.0, start_offset_s=0.3)
    assert graph.spin_until(lambda: player.subscriber_count("/front/image_raw") > 0)
    report = player.play()
    assert graph.spin_until(lambda: len(images) == 2)
    # Offset 0.3 s at 5 Hz skips the first two snapshots; stamps and /clock are the bag's.
    assert [_stamp(m) for m in images] == [SAMPLE.stamp_ns(i) for i in (2, 3)]
    ticks = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for m in clock]
    assert ticks == sorted(ticks) and SAMPLE.stamp_ns(3) in ticks
    assert report.wall_s >= 0.045  # paced: 0.2 s of bag at rate 4

    # /tf_static is latched like `ros2 bag play` does: a late subscriber still gets it.
    static = graph.listen(TFMessage, "/tf_static", LATCHED_QOS)
    assert graph.spin_until(lambda: len(static) == 1)
    assert {t.child_frame_id for t in static[0].transforms} == {
        "cam_front_left_optical_frame", "cam_front_right_optical_frame"}


def test_topic_selection_loop_and_unknown_topics(graph, sample):
    # As fast as possible: histories deep enough for every pass published before the stop
    # (KEEP_LAST 10 drops messages when a loaded CPU delays the listener).
    images = graph.listen(Image, "/cam_front_right/image_raw", qos=1000)
    bag = BagSource(sample)
    with pytest.raises(BagError, match=r"/nope are not in .* topics are: "):
        graph.player(bag, topics=("/nope",))
    player = graph.player(bag, rate=0.0, topics=("/cam_front_right/image_raw",), loop=True,
                          queue_depth=1000)
    assert player.topics == ["/cam_front_right/image_raw"]
    assert graph.spin_until(lambda: player.subscriber_count("/cam_front_right/image_raw") > 0)

    def stop_after_two_passes() -> None:
        if len(images) >= 8:
            player.stop()

    graph.listener.create_timer(0.01, stop_after_two_passes)
    report = player.play()
    assert report.stopped and report.loops >= 1
    assert graph.spin_until(lambda: len(images) >= 8)
    stamps = [_stamp(m) for m in images]
    assert stamps[4:8] == stamps[:4]  # the loop starts again from the first stamp


def test_unknown_message_types_are_skipped_with_a_warning(graph, tmp_path):
    path = tmp_path / "custom"
    writer = Writer(path, version=9)
    writer.open()
    thing = writer.add_connection("/robot/thing", "my_robot_msgs/msg/Thing",
                                  msgdef="int32 value\n", rihs01="RIHS01_" + "0" * 64)
    note = writer.add_connection("/note", "std_msgs/msg/String", typestore=typestore())
    writer.write(thing, SAMPLE.start_ns, b"\x00\x01\x00\x00\x07\x00\x00\x00")
    writer.write(note, SAMPLE.start_ns + 1, serialize_message(String(data="hello")))
    writer.close()
    notes = graph.listen(String, "/note")
    issues = IssueLog()
    player = graph.player(BagSource(path, issues), rate=0.0)
    warning = next(i for i in issues.issues if i.code == "unknown_type")
    assert warning.topic == "/robot/thing"
    assert "my_robot_msgs/msg/Thing is not a message of a known ROS interface package" in (
        warning.message)
    assert player.topics == ["/note"]
    assert graph.spin_until(lambda: player.subscriber_count("/note"))
    player.play()
    assert graph.spin_until(lambda: [m.data for m in notes] == ["hello"])
    with pytest.raises(BagError, match="nothing to play"):
        graph.player(BagSource(path, IssueLog()), topics=("/robot/thing",))


def test_lossless_without_a_node_fails_clearly(graph, sample):
    player = graph.player(BagSource(sample), lossless=True, discovery_timeout_s=0.5)
    with pytest.raises(BagError, match=r"no node publishes /reconstruct_node/consumed .* "
                                       r"lossless:=true"):
        player.play()
