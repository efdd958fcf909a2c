"""Damaged and unusual bags: truncated files, a missing or garbage metadata.yaml, missing
or mistyped topics, missing camera_info, unusable depth, gaps and time jumps, message types
the bag names (never imported), payloads that do not deserialise, flipped bytes caught by MCAP CRCs.
Each gives a clear error or warning, and whatever could be reconstructed is kept."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from dataclasses import replace

import numpy as np
import pytest
from bag_helpers import SAMPLE, make_sample, parameters, process, rewrite_bag
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from dvlt_core.testing.images import constant_png
from dvlt_ros.bags.bag_metadata import metadata_problem
from dvlt_ros.bags.decode import FrameDecoder
from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.mcap_crc import summary_crc_problem
from dvlt_ros.bags.mcap_salvage import (
    MAGIC,
    OP_CHUNK,
    ChunkHeader,
    DamagedChunkError,
    McapSalvager,
    decompress,
    records,
)
from dvlt_ros.bags.msgtypes import (
    COMPRESSED_IMAGE,
    IMAGE,
    UnknownMessageTypeError,
    message_class,
    typestore,
)
from dvlt_ros.bags.processor import BagProcessor
from dvlt_ros.bags.sample import ground_truth_backend
from dvlt_ros.bags.source import BagMessage, BagSource
from dvlt_ros.cli import process as process_cli
from dvlt_ros.cli import replay as replay_cli
from dvlt_ros.conversions.image import array_to_image, image_to_array, image_to_rgb8
from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped

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


# ------------------------------------------------------------------------------------------
# Bag files: message types named by the bag, payloads that do not deserialise, MCAP CRCs,
# garbage metadata.yaml.
# ------------------------------------------------------------------------------------------

PROBE_MODULE = "dvlt_probe_imported_by_type_name"


def _custom_bag(path, *, topics):
    """A bag of ``topics``: [(topic, type, msgdef or None, [payloads])]; a msgdef of None
    takes the type's definition from the Kilted typestore."""
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    stamp = SAMPLE.start_ns
    for topic, msgtype, msgdef, payloads in topics:
        if msgdef is None:
            conn = writer.add_connection(topic, msgtype, typestore=typestore())
        else:
            conn = writer.add_connection(topic, msgtype, msgdef=msgdef,
                                         rihs01="RIHS01_" + "0" * 64)
        for payload in payloads:
            stamp += 1000
            writer.write(conn, stamp, payload)
    writer.close()
    return path


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("[error]")]


def test_replay_never_imports_a_module_named_by_the_bag(tmp_path, monkeypatch, capsys):
    """A type ``pkg/msg/Foo`` of an unknown package is skipped with a warning; the module
    ``pkg`` is never imported (``this`` would print, ours records that it ran)."""
    marker = tmp_path / "imported"
    package = tmp_path / "modules" / PROBE_MODULE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    hello = serialize_message(String(data="hello"))
    bag = _custom_bag(tmp_path / "bag", topics=[
        ("/probe", f"{PROBE_MODULE}/msg/Foo", "int32 x\n", [b"\x00\x01\x00\x00\x07\x00\x00\x00"]),
        ("/this", "this/msg/Foo", "int32 x\n", [b"\x00\x01\x00\x00\x07\x00\x00\x00"]),
        ("/garbage_definition", "my_pkg/msg/Bar", "@@ not { a definition", [b"\x00\x01"]),
        ("/no_definition", "other_pkg/msg/Baz", "", [b"\x00\x01"]),
        ("/malformed", "std_msgs/msg/String", None, [b"\x00\x01\x00\x00\xff\xff\xff\x7f"] * 3),
        ("/note", "std_msgs/msg/String", None, [hello]),
    ])
    this_loaded = "this" in sys.modules
    assert replay_cli.main([str(bag), "--rate", "0", "--no-clock"]) == 0
    err = capsys.readouterr().err
    assert not marker.exists() and PROBE_MODULE not in sys.modules
    assert ("this" in sys.modules) == this_loaded
    assert not _error_lines(err)
    for topic in ("/probe", "/this", "/garbage_definition", "/no_definition"):
        assert f"unknown_type: [{topic}]" in err
    assert f"type {PROBE_MODULE}/msg/Foo is not a message of a known ROS interface" in err
    assert "malformed_topic: [/malformed] its first 3 message(s) do not deserialise" in err
    assert "playing" in err and "done: 1 messages" in err
    for name in (f"{PROBE_MODULE}/msg/Foo", "this/msg/Foo", "os/msg/path", "std_msgs/msg/os",
                 "std_msgs/msg/../x", "sensor_msgs/srv/Image"):
        with pytest.raises(UnknownMessageTypeError):
            message_class(name)
    assert not marker.exists()
    assert message_class("sensor_msgs/msg/Image").__name__ == "Image"

    nothing = _custom_bag(tmp_path / "nothing", topics=[
        ("/this", "this/msg/Foo", "int32 x\n", [b"\x00\x01\x00\x00\x07\x00\x00\x00"])])
    assert replay_cli.main([str(nothing), "--rate", "0"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "nothing to play" in line


def _replace_payloads(source, dest, topic, payload):
    return rewrite_bag(source, dest, lambda messages: [
        replace(m, raw=payload(m.raw)) if m.topic == topic else m for m in messages])


def test_a_message_that_does_not_deserialise_is_skipped_with_a_warning(sample, tmp_path):
    cut = {SAMPLE.stamp_ns(2)}
    bag = rewrite_bag(sample, tmp_path / "bag", lambda messages: [
        replace(m, raw=m.raw[:40]) if m.topic == "/cam_front_left/image_raw"
        and m.log_ns in cut else m for m in messages])
    summary, issues = process(bag, tmp_path / "out", backend_from=sample)
    (warning,) = [i for i in issues.issues if i.code == "malformed_message"]
    assert warning.topic == "/cam_front_left/image_raw" and warning.stamp_ns in cut
    assert "does not deserialise as sensor_msgs/msg/Image: skipped" in warning.message
    assert summary["windows"] == SAMPLE.frames - 1
    assert not summary["complete"] and summary["bag_damaged"]


@pytest.mark.parametrize("topic", ["/cam_front_right/image_raw", "/dvlt_sample/scene"])
def test_cli_refuses_a_needed_topic_whose_messages_do_not_deserialise(sample, tmp_path, topic,
                                                                       capsys):
    bag = _replace_payloads(sample, tmp_path / "bag", topic, lambda raw: raw[:9])
    args = [str(bag), "--out", str(tmp_path / "out"), "--backend", "ground_truth", "--quiet",
            "-p", "img_size:=112"]
    assert process_cli.main(args) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert topic in line
    assert not (tmp_path / "out").exists()


def _chunks(file):
    data = file.read_bytes()
    return [r for r in records(data, len(MAGIC), len(data) - len(MAGIC)) if r.op == OP_CHUNK]


def _flip(file, offset):
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x40
    file.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """A sample bag of several MCAP chunks (rosbags starts a new one past 1 MiB)."""
    return make_sample(tmp_path_factory.mktemp("chunked") / "bag", frames=8, width=320,
                       height=240)


def test_written_mcap_bags_carry_real_crcs(chunked, tmp_path):
    (file,) = chunked.glob("*.mcap")
    chunks = _chunks(file)
    assert len(chunks) >= 3
    assert all(ChunkHeader.parse(c.body).crc != 0 for c in chunks)
    salvager = McapSalvager(file)
    scan = salvager.scan
    salvager.close()
    assert scan.damaged == [] and scan.data_crc == "ok"
    assert scan.chunks_checked == len(chunks) and scan.chunks_without_crc == 0
    data = file.read_bytes()
    (summary_crc,) = struct.unpack_from("<I", data, len(data) - len(MAGIC) - 4)
    assert summary_crc != 0 and summary_crc_problem(file) is None


def test_written_mcap_crcs_satisfy_the_mcap_library(chunked, tmp_path):
    mcap_reader = pytest.importorskip("mcap.stream_reader")
    (file,) = chunked.glob("*.mcap")
    assert sum(1 for _ in mcap_reader.StreamReader(str(file), validate_crcs=True).records)
    copy = shutil.copytree(chunked, tmp_path / "copy")
    (flipped,) = copy.glob("*.mcap")
    chunk = _chunks(flipped)[1]
    _flip(flipped, chunk.offset + 9 + ChunkHeader.parse(chunk.body).records_at + 5000)
    with pytest.raises(mcap_reader.CRCValidationError, match="in Chunk"):
        for _ in mcap_reader.StreamReader(str(flipped), validate_crcs=True).records:
            pass


def _points_stamps(out):
    with AnyReader([out / "reconstruction"], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if c.topic == "/reconstruct_node/points"]
        return [stamp for _, stamp, _ in reader.messages(conns)]


@pytest.mark.parametrize("where", ["payload", "payload_single_file", "summary"])
def test_a_flipped_byte_is_detected_and_the_rest_is_processed(chunked, tmp_path, where):
    copy = shutil.copytree(chunked, tmp_path / "bag")
    (file,) = copy.glob("*.mcap")
    data = file.read_bytes()
    if where == "summary":
        (summary_start,) = struct.unpack_from("<Q", data, len(data) - len(MAGIC) - 20)
        _flip(file, summary_start + 20)
    else:
        chunk = _chunks(file)[1]
        _flip(file, chunk.offset + 9 + ChunkHeader.parse(chunk.body).records_at + 5000)
    bag = file if where == "payload_single_file" else copy
    summary, issues = process(bag, tmp_path / "out", backend_from=chunked)
    damage = [i.message for i in issues.issues if i.code == "damaged"]
    assert damage and not summary["complete"] and summary["bag_damaged"]
    assert summary["error"] is None
    last = SAMPLE.start_ns + round(7 * 1e9 / SAMPLE.rate_hz)
    stamps = _points_stamps(tmp_path / "out")
    assert stamps[-1] == last  # reading went on past the damage
    if where == "summary":
        assert "summary (the index at the end of the file) fails its CRC check" in damage[0]
        assert summary["windows"] == 8
    else:
        assert any("chunk at byte" in m and "is skipped: its records fail their CRC check"
                   in m for m in damage)
        assert 0 < summary["windows"] < 8
        assert len(set(stamps)) == len(stamps)  # nothing handed out twice
    assert summary_crc_problem(next((tmp_path / "out" / "reconstruction").glob("*.mcap"))) \
        is None


GARBAGE_METADATA = {
    "not_yaml": "rosbag2_bagfile_information: [unclosed\n  : {",
    "binary": "\x89PNG\x00\x01\x02",
    "a_list": "- version\n- 9\n",
    "empty": "",
    "missing_storage": "rosbag2_bagfile_information:\n  version: 9\n",
    "wrong_type": "rosbag2_bagfile_information:\n  version: nine\n",
}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("kind", sorted(GARBAGE_METADATA))
def test_garbage_metadata_yaml_is_a_warning_and_the_storage_files_are_read(tmp_path, storage,
                                                                          kind):
    bag = make_sample(tmp_path / "bag", storage, frames=2)
    (bag / "metadata.yaml").write_text(GARBAGE_METADATA[kind])
    summary, issues = process(bag, tmp_path / "out")
    (warning,) = [i for i in issues.issues if i.code == "metadata_invalid"]
    assert "metadata.yaml cannot be used: " in warning.message
    assert "reading its storage files directly" in warning.message
    assert summary["windows"] == 2


def test_metadata_yaml_problems_are_named(tmp_path):
    bag = make_sample(tmp_path / "bag", frames=1)
    meta = bag / "metadata.yaml"
    good = meta.read_text()
    assert metadata_problem(meta) is None
    cases = {
        GARBAGE_METADATA["not_yaml"]: "not valid YAML at line",
        GARBAGE_METADATA["a_list"]: "holds a list",
        GARBAGE_METADATA["missing_storage"]: "storage_identifier is missing",
        GARBAGE_METADATA["wrong_type"]: "version is str",
        good.replace("bag.mcap", "gone.mcap"): "storage files that are not there: gone.mcap",
        good.replace("message_count: 1", "message_count: many", 1): "message_count is str",
    }
    for text, reason in cases.items():
        meta.write_text(text)
        assert reason in metadata_problem(meta)


def test_garbage_metadata_without_storage_files_is_a_one_line_refusal(tmp_path, capsys):
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text(GARBAGE_METADATA["not_yaml"])
    assert process_cli.main([str(bag), "--out", str(tmp_path / "out")]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "metadata.yaml cannot be used: it is not valid YAML" in line
    assert "holds no .mcap/.db3 file" in line


def test_damage_outside_the_chunks_fails_the_data_section_crc(chunked, tmp_path):
    copy = shutil.copytree(chunked, tmp_path / "bag")
    (file,) = copy.glob("*.mcap")
    data = file.read_bytes()
    index = next(r for r in records(data, len(MAGIC), len(data) - len(MAGIC))
                 if r.op == 0x07)  # a message index record after a chunk
    _flip(file, index.offset + 9 + 8)
    salvager = McapSalvager(file)
    scan = salvager.scan
    salvager.close()
    (damage,) = scan.damaged
    assert damage.startswith("the data section fails its CRC check")
    assert scan.chunks_checked == len(_chunks(file)) and scan.complete


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


# ---------------------------------------------------------------- the model of a run
@pytest.mark.parametrize(("backend", "checkpoint", "expected"), [
    ("onnxruntime", "empty_dir", "is not a DVLT export (no export.json)"),
    ("torch", "missing.safetensors", "missing.safetensors"),
])
def test_a_bad_model_for_the_run_is_a_one_line_refusal(sample, tmp_path, capsys, backend,
                                                       checkpoint, expected):
    """A checkpoint or export folder that cannot be used ends `process` before any output."""
    (tmp_path / "empty_dir").mkdir()
    code = process_cli.main([str(sample), "--out", str(tmp_path / "out"), "--quiet",
                             "--backend", backend, "--checkpoint", str(tmp_path / checkpoint),
                             "--device", "cpu"])
    (line,) = _error_lines(capsys.readouterr().err)
    assert code == 2 and expected in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("params", "expected"), [
    (["budget_min_num_steps:=9", "budget_max_num_steps:=8"],
     "budget_min_num_steps (9) must be <= budget_max_num_steps (8)"),
    (["torch_compile:=true"],
     "torch_compile applies to backend torch only, the backend is 'ground_truth'"),
])
def test_cli_refuses_parameters_that_cannot_go_together(sample, tmp_path, capsys, params,
                                                        expected):
    """Each value passes alone; together they are refused, as the node refuses them."""
    args = [str(sample), "--out", str(tmp_path / "out"), "--backend", "ground_truth",
            "--quiet", *(arg for param in params for arg in ("-p", param))]
    assert process_cli.main(args) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_cli_refuses_negative_torch_threads(sample, tmp_path, capsys):
    args = [str(sample), "--out", str(tmp_path / "out"), "--backend", "ground_truth",
            "--quiet", "-p", "torch_threads:=-1"]
    assert process_cli.main(args) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "invalid parameters: torch_threads must be >= 0, got -1" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flag", "module", "package"),
                         [("--glb", "trimesh", "trimesh"), ("--rrd", "rerun", "rerun-sdk")])
def test_a_viewer_export_without_its_package_is_refused_before_any_work(
        sample, tmp_path, capsys, monkeypatch, flag, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # the 'viewers' extra not installed
    code = process_cli.main([str(sample), "--out", str(tmp_path / "out"), "--quiet",
                             "--backend", "ground_truth", flag])
    (line,) = _error_lines(capsys.readouterr().err)
    assert code == 2 and flag in line and package in line
    assert "pip install 'dvlt_ros[viewers]'" in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- a window that fails
def test_a_failing_window_is_reported_and_the_rest_processed(sample, tmp_path):
    """The ground-truth backend refuses views it does not know: one altered image makes its
    window fail. Like the live node, processing reports it and goes on."""
    def altered(msg, topic, index):
        if topic.startswith("/" + CAMERAS[0]) and index == 2:
            rgb = image_to_rgb8(msg)
            return array_to_image(255 - rgb, "rgb8", msg.header)
        return msg

    bag = _recode_images(sample, tmp_path / "altered", altered)
    summary, _ = process(bag, tmp_path / "out", backend_from=sample)
    assert summary["failed_windows"] >= 1 and summary["events"]["cycle_error"] >= 1
    assert summary["windows"] >= SAMPLE.frames - 2 and not summary["complete"]
    assert (tmp_path / "out" / "summary.json").is_file()


@pytest.mark.parametrize(("content", "why"), [
    (b"\xff\xfe not text", "cannot read TUM file"),
    (b"inf 0 0 0 0 0 0 1\n", "must be finite"),
    (b"1.0 0 0 0 0 0 0 0\n", "quaternion (qx qy qz qw) is zero"),
])
def test_a_bad_ground_truth_file_is_refused_before_processing(sample, tmp_path, capsys, content,
                                                              why):
    tum = tmp_path / "gt.tum"
    tum.write_bytes(content)
    code = process_cli.main([str(sample), "--out", str(tmp_path / "out"), "--quiet",
                             "--backend", "ground_truth", "--gt-tum", str(tum), *CHEAP])
    (line,) = _error_lines(capsys.readouterr().err)
    assert code == 2 and why in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_a_chunk_never_decompresses_past_its_declared_size(compression):
    """A crafted chunk (a small header size over a bomb of zeros) is refused after at most
    its declared size, and an honest one decompresses."""
    records_bytes = bytes(1 << 20)
    if compression == "zstd":
        try:
            from compression import zstd
        except ImportError:
            from backports import zstd
        packed = zstd.compress(records_bytes)
    else:
        from lz4.frame import compress

        packed = compress(records_bytes)
    assert decompress(packed, compression, len(records_bytes)) == records_bytes
    with pytest.raises(DamagedChunkError, match="does not end within the 1000 bytes"):
        decompress(packed, compression, 1000)


# ---------------------------------------------------------------- the robot's TF
def _tf_raw(transforms) -> bytes:
    return serialize_message(tf_message(transforms))


def _transform(parent, child, stamp_ns, translation=(0.0, 0.0, 0.0), quaternion=(0, 0, 0, 1)):
    msg = transform_stamped(np.eye(4), parent, child, stamp_from_ns(stamp_ns))
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in translation)
    r.x, r.y, r.z, r.w = (float(v) for v in quaternion)
    return msg


def test_bad_tf_in_a_bag_is_dropped_with_warnings_and_the_rest_is_used(sample, tmp_path):
    """Non-finite values, a zero quaternion, empty frame ids, a second parent and a static
    edge republished as time-stamped: each transform is dropped (tf_invalid, counted in
    summary.json); the good transforms of the same message are kept, and the windows are
    grounded from the rest."""
    rig = SAMPLE.rig()
    stamp = (SAMPLE.stamp_ns(0) + SAMPLE.stamp_ns(1)) // 2
    optical = rig.camera("cam_front_left").optical_frame
    bad = [
        _transform("odom", "base_link", stamp, translation=(np.nan, 0, 0)),
        _transform("odom", "base_link", stamp, quaternion=(0, 0, 0, 0)),
        _transform("", "base_link", stamp),
        _transform("odom", "", stamp),
        _transform("map", "base_link", stamp),
        _transform("base_link", optical, stamp),
    ]
    good = transform_stamped(rig.world_from_base((stamp - SAMPLE.start_ns) / 1e9), "odom",
                             "base_link", stamp_from_ns(stamp))

    def insert(messages):
        extra = BagMessage("/tf", "tf2_msgs/msg/TFMessage", stamp, _tf_raw([*bad, good]))
        return sorted([*messages, extra], key=lambda m: m.log_ns)

    bag = rewrite_bag(sample, tmp_path / "bad_tf", insert)
    summary, issues = process(bag, tmp_path / "out", unscaled=True, scale_source="rig",
                              anchor="tf", world_frame="odom")
    assert summary["error"] is None and summary["windows"] == SAMPLE.frames
    assert issues.counts["tf_invalid"] == len(bad)
    assert summary["issue_counts"]["tf_invalid"] == len(bad)
    grounding = summary["grounding"]
    assert grounding["tf"]["dropped"] == len(bad) and "map" not in grounding["tf"]["frames"]
    kinds = grounding["tf"]["dropped_kinds"]
    assert len(kinds) == len(bad) and set(kinds.values()) == {1}
    reasons = " ".join(kinds)
    for why in ("non-finite", "zero quaternion", "empty frame id", "two parents",
                "both as a static and as a time-stamped"):
        assert why in reasons
    assert grounding["sources"] == {"rig": SAMPLE.frames}
    assert grounding["anchors"] == {"tf": SAMPLE.frames}


def test_a_camera_without_a_tf_frame_is_warned_and_the_others_are_used(sample, tmp_path):
    """/tf_static lacks one camera's mount: its lookups fail (tf_unavailable), and
    the windows are scaled by odometry and anchored with the camera that has TF (but the
    first, a single snapshot: no motion, no scale, a single TF position)."""
    rig = SAMPLE.rig()
    kept = rig.camera("cam_front_left")

    def strip(messages):
        for m in messages:
            if m.topic == "/tf_static":
                m = replace(m, raw=_tf_raw([transform_stamped(
                    kept.base_from_camera, "base_link", kept.optical_frame,
                    stamp_from_ns(m.log_ns))]))
            yield m

    bag = rewrite_bag(sample, tmp_path / "one_mount", strip)
    summary, _ = process(bag, tmp_path / "out", unscaled=True,
                         scale_source="odometry", anchor="tf", world_frame="odom")
    assert summary["error"] is None and summary["windows"] == SAMPLE.frames
    assert summary["events"]["tf_unavailable"] == SAMPLE.frames
    grounding = summary["grounding"]
    assert grounding["sources"] == {"none": 1, "odometry": SAMPLE.frames - 1}
    assert grounding["anchors"] == {"unanchored": 1, "tf": SAMPLE.frames - 1}
    assert "odometry" in grounding["unscaled_reason"]


def test_tf_of_another_type_is_ignored_with_a_warning(sample, tmp_path):
    def retype(messages):
        for m in messages:
            if m.topic == "/tf":
                m = replace(m, msgtype="std_msgs/msg/String",
                            raw=serialize_message(String(data="not tf")))
            yield m

    bag = rewrite_bag(sample, tmp_path / "string_tf", retype)
    summary, issues = process(bag, tmp_path / "out", unscaled=True, scale_source="odometry")
    assert summary["error"] is None and summary["windows"] == SAMPLE.frames
    assert {"unknown_type", "missing_tf"} <= issues.codes()
    assert summary["grounding"]["metric_windows"] == 0


def test_unusable_and_stale_depth_is_warned_and_the_rest_is_used(tmp_path):
    """One camera's depth in mono8 (not a depth encoding) and the other's ending after the
    second snapshot: depth_rejected and depth_stale warnings, processing goes on, and the
    windows with depth are scaled by it."""
    bag = make_sample(tmp_path / "depth", depth=True)
    cut = SAMPLE.stamp_ns(1) + 10**7

    def spoil(messages):
        for m in messages:
            if m.topic == "/cam_front_left/depth/image_raw":
                msg = deserialize_message(m.raw, Image)
                m = replace(m, raw=serialize_message(array_to_image(
                    np.zeros((msg.height, msg.width), np.uint8), "mono8", msg.header)))
            elif m.topic.startswith("/cam_front_right/depth/") and m.log_ns > cut:
                continue
            yield m

    spoiled = rewrite_bag(bag, tmp_path / "spoiled", spoil)
    summary, issues = process(spoiled, tmp_path / "out", unscaled=True, scale_source="depth")
    assert summary["error"] is None and summary["windows"] == SAMPLE.frames
    assert issues.counts["depth_rejected"] == SAMPLE.frames
    assert "mono8" in next(i.message for i in issues.issues if i.code == "depth_rejected")
    # The rejected images still show how far that stream has got: only the cut one is stale.
    (stale,) = [i for i in issues.issues if i.code == "depth_stale"]
    assert stale.topic == "/cam_front_right/depth/image_raw"
    sources = summary["grounding"]["sources"]
    assert sources["depth"] >= 2 and sum(sources.values()) == SAMPLE.frames


def test_depth_with_unset_stamps_or_beyond_the_decode_budget_is_refused(tmp_path):
    """The node's depth checks, in bags too: one camera's depth stamped 0, the other's 3x
    as wide and high (9x the pixels of max_pixels = the colour image's): depth_rejected for
    every one, processing goes on up to scale."""
    bag = make_sample(tmp_path / "depth", depth=True)

    def spoil(messages):
        for m in messages:
            if m.topic == "/cam_front_left/depth/image_raw":
                msg = deserialize_message(m.raw, Image)
                msg.header.stamp = stamp_from_ns(0)
                m = replace(m, raw=serialize_message(msg))
            elif m.topic == "/cam_front_right/depth/image_raw":
                msg = deserialize_message(m.raw, Image)
                big = np.kron(image_to_array(msg), np.ones((3, 3), np.uint16))
                m = replace(m, raw=serialize_message(array_to_image(big, "16UC1", msg.header)))
            yield m

    spoiled = rewrite_bag(bag, tmp_path / "spoiled", spoil)
    summary, issues = process(spoiled, tmp_path / "out", unscaled=True, scale_source="depth",
                              max_pixels=SAMPLE.width * SAMPLE.height)
    assert summary["error"] is None and summary["windows"] == SAMPLE.frames
    assert issues.counts["depth_rejected"] == 2 * SAMPLE.frames
    messages = [i.message for i in issues.issues if i.code == "depth_rejected"]
    assert any("unset or negative" in m for m in messages)
    assert any("max_pixels" in m and "480x360" in m for m in messages)
    assert summary["grounding"]["sources"] == {"none": SAMPLE.frames}


def test_bag_depth_sees_the_colour_image_as_published_like_the_node(tmp_path):
    """A colour image downscaled to max_pixels: its depth is compared with the image as
    published (the node's rule), not with the reduced frame."""
    header = Header(stamp=stamp_from_ns(SAMPLE.stamp_ns(0)), frame_id="cam_optical")
    raw = serialize_message(array_to_image(np.zeros((120, 160, 3), np.uint8), "rgb8", header))
    decoder = FrameDecoder(use_camera_info=False, max_pixels=160 * 120 // 4)
    frame, _ = decoder.image("cam", raw, compressed=False)
    assert (frame.width, frame.height) == (80, 60)
    assert decoder.colour_view("cam") == ("cam_optical", (160, 120))
