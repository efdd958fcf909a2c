"""Bad input to reconstruct_node over real DDS: each gives a clear log line and a
/diagnostics status, and the node keeps reconstructing the good input."""

from __future__ import annotations

import io
import subprocess
import warnings

import numpy as np
import pytest
from node_harness import (
    RELIABLE,
    OutputCollector,
    RigPublisher,
    RosGraph,
    level,
    node_command,
    stamp_of,
    status_values,
    wait_cycle,
)
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.geometry import TransformError
from dvlt_core.io.image_decode import decode_image
from dvlt_core.synthetic import default_rig
from dvlt_core.testing.images import constant_png
from dvlt_ros.conversions.camera_info import camera_info_from_intrinsics
from dvlt_ros.conversions.image import array_to_image
from dvlt_ros.conversions.tf import stamp_from_ns, tf_message, transform_stamped
from dvlt_ros.node_support.tf_listener import TF_QOS, TF_STATIC_QOS
from dvlt_ros.pipeline.frames import CameraFrame, CameraInfoData, prepare_frame

TIMES = (0.0, 0.5, 1.0, 1.5, 2.0)
WARN, ERROR = 1, 2
MAX_PIXELS = 112 * 84
CAMERA_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def rig():
    return default_rig(width=112, height=84, num_cameras=2)


@pytest.fixture(scope="module")
def backend(rig):
    backend = GroundTruthBackend.for_rig(rig, TIMES, img_size=112)
    # The "huge" image of camera 0 at TIMES[0], after the node downscales it on arrival.
    big = default_rig(width=224, height=168, num_cameras=2)
    view = big.render(big.names[0], TIMES[0])
    small, _ = prepare_frame(CameraFrame("c", 0, "", view.image), max_pixels=MAX_PIXELS)
    backend.register(small.rgb, rig.intrinsics(rig.names[0]), view.c2w)
    return backend


def _graph(rig, backend, **params):
    graph = RosGraph()
    node = graph.reconstruct_node(
        backend, cameras=rig.names, rate=20.0, input_qos="reliable", camera_timeout=CAMERA_TIMEOUT,
        use_input_camera_info=True, max_pixels=MAX_PIXELS, window_timesteps=2, **params,
    )
    publisher = RigPublisher(graph, rig, camera_info=True)
    collector = OutputCollector(graph, rig.names)
    publisher.wait_connected()
    return graph, node, publisher, collector


@pytest.fixture
def setup(rig, backend):
    graph, *rest = _graph(rig, backend, resolution_policy="reject")
    yield graph, *rest
    graph.close()


@pytest.fixture
def padded(rig, backend):
    graph, *rest = _graph(rig, backend, resolution_policy="pad")
    yield graph, *rest
    graph.close()


def _problem(collector, source_suffix, code, text, min_level=WARN, timeout=10.0) -> None:
    """Wait for /diagnostics to show problem ``code`` with ``text`` on ``*source_suffix``."""
    status = collector.wait_status(
        source_suffix,
        lambda s: level(s) >= min_level and any(
            kv.key == f"problem: {code}" and text in kv.value for kv in s.values),
        timeout,
    )
    shown = [(s.name, s.message) for s in collector.statuses(source_suffix)[:1]]
    assert status is not None, f"no {code} problem with {text!r} on '*{source_suffix}': {shown}"


def _still_works(graph, node, publisher, t, cameras=None, stamp_ns=None):
    """A good snapshot (rig time ``t``) after the bad input is reconstructed."""
    return wait_cycle(graph, node, publisher.publish(t, cameras=cameras, stamp_ns=stamp_ns))


def _raw_image(publisher, camera, stamp_ns, encoding="rgb8", width=112, height=84):
    msg = Image(header=publisher.header(camera, stamp_ns), height=height, width=width,
                encoding=encoding, step=width * 3)
    msg.data = bytes(width * height * 3)
    publisher.images[camera].publish(msg)


def test_bad_images(setup, rig, capfd):
    graph, node, publisher, collector = setup
    cam0, cam1 = rig.names
    _still_works(graph, node, publisher, TIMES[0])

    _raw_image(publisher, cam0, stamp_of(0.6), encoding="nv21")
    _problem(collector, f"camera {cam0}", "image_rejected",
             "encoding 'nv21' is not a colour encoding", ERROR)
    _raw_image(publisher, cam1, stamp_of(0.6), width=0, height=0)
    _problem(collector, f"camera {cam1}", "image_rejected", "zero size", ERROR)
    # Degenerate: less than one 14 px patch per side.
    _raw_image(publisher, cam0, stamp_of(0.7), width=1, height=1)
    _problem(collector, f"camera {cam0}", "image_rejected", "smaller than one 14 px patch",
             ERROR)
    # Raw, but more than 4 x max_pixels: refused before it is converted.
    _raw_image(publisher, cam1, stamp_of(0.7), width=300, height=300)
    _problem(collector, f"camera {cam1}", "image_rejected",
             f"only 4 x max_pixels = {4 * MAX_PIXELS} pixels can be decoded", ERROR)
    _still_works(graph, node, publisher, TIMES[1])
    # Every refusal is counted on its camera.
    for camera in (cam0, cam1):
        status = collector.wait_status(f"camera {camera}",
                                       lambda s: status_values(s)["rejected"] == "2")
        assert status is not None, status_values(collector.statuses(f"camera {camera}")[0])

    # Odd size: a 2 x 400 strip is too elongated for the network's patches.
    strip = np.zeros((400, 2, 3), np.uint8)
    publisher.images[cam1].publish(array_to_image(strip, "rgb8", publisher.header(cam1,
                                                                                 stamp_of(1.1))))
    _problem(collector, f"camera {cam1}", "image_rejected", "elongated", ERROR)
    # Different resolutions (resolution_policy reject): camera 1 at half size.
    half = rig.render(cam1, TIMES[2]).image[::2, ::2]
    publisher.publish(TIMES[2], cameras=[cam0])
    publisher.images[cam1].publish(array_to_image(np.ascontiguousarray(half), "rgb8",
                                                  publisher.header(cam1, stamp_of(TIMES[2]))))
    _problem(collector, f"camera {cam1}", "resolution_mismatch", "differs from camera", ERROR)
    _still_works(graph, node, publisher, TIMES[3])

    # Huge image: downscaled on arrival to max_pixels, with a WARN.
    stamp = stamp_of(TIMES[0] + 3.0)
    big = default_rig(width=224, height=168, num_cameras=2).render(cam0, TIMES[0]).image
    publisher.images[cam0].publish(array_to_image(big, "rgb8", publisher.header(cam0, stamp)))
    publisher.publish(TIMES[0], cameras=[cam1], stamp_ns=stamp)
    _problem(collector, f"camera {cam0}", "image_downscaled", "downscaled to 112x84")
    report = wait_cycle(graph, node, stamp)
    assert report.num_cameras == 2
    assert node.problems.level("pipeline") < ERROR, node.problems.active("pipeline")

    logs = capfd.readouterr().err
    assert f"image_rejected: [{cam0}] image encoding 'nv21' is not a colour" in logs
    assert "resolution_mismatch" in logs and "image_downscaled" in logs


def test_bad_camera_info(setup, rig):
    graph, node, publisher, collector = setup
    cam0, cam1 = rig.names
    _still_works(graph, node, publisher, TIMES[0])
    for i, (k, what) in enumerate(((np.full(9, np.nan), "NaN"), (np.zeros(9), "not positive"))):
        stamp = stamp_of(TIMES[1] + 0.1 * i)
        info = CameraInfo(header=publisher.header(cam0, stamp), width=112, height=84)
        info.k = [float(v) for v in k]
        publisher.infos[cam0].publish(info)
        graph.spin_for(0.2)
        for cam in (cam0, cam1):
            publisher.images[cam].publish(array_to_image(
                rig.render(cam, TIMES[1]).image, "rgb8", publisher.header(cam, stamp)))
        _problem(collector, f"camera {cam0}", "camera_info_invalid", what)
        report = wait_cycle(graph, node, stamp)
        assert report.num_cameras == 2  # the predicted intrinsics are used instead


def test_stamps_out_of_order_and_jumping_back(setup, rig):
    graph, node, publisher, collector = setup
    for t in TIMES[:3]:
        _still_works(graph, node, publisher, t)
    assert graph.spin_until(lambda: len(collector.last("trajectory").poses) == 3, 5)
    # Slightly older than the last frame: dropped as out of order.
    publisher.publish(TIMES[1] + 0.3)
    _problem(collector, f"camera {rig.names[0]}", "out_of_order", "not newer")
    # A looping bag: back to the start. Everything resets; a new world and trajectory.
    report = _still_works(graph, node, publisher, TIMES[0])
    assert report.epoch == 1
    _problem(collector, f"camera {rig.names[0]}", "time_jump_reset", "jumped back")
    assert graph.spin_until(lambda: len(collector.last("trajectory").poses) == 1, 5)
    report = _still_works(graph, node, publisher, TIMES[1])
    assert report.epoch == 1


def test_camera_stops_publishing(setup, rig):
    graph, node, publisher, collector = setup
    cam0, cam1 = rig.names
    _still_works(graph, node, publisher, TIMES[0])
    # Only camera 0 keeps publishing: after camera_timeout windows go on without camera 1.
    for i in range(1, round(CAMERA_TIMEOUT / 0.2) + 3):
        publisher.publish(TIMES[1], cameras=[cam0], stamp_ns=stamp_of(0.01 * i))
        graph.spin_for(0.2)
    _problem(collector, f"camera {cam1}", "camera_timeout", "windows continue without it")
    report = _still_works(graph, node, publisher, TIMES[1], cameras=[cam0],
                          stamp_ns=stamp_of(0.3))
    assert report.num_cameras == 1
    # It comes back: the problem clears and both cameras are used again.
    report = _still_works(graph, node, publisher, TIMES[3])
    assert report.num_cameras == 2
    assert collector.wait_status(f"camera {cam1}", lambda s: level(s) == 0) is not None


def test_time_jump_clears_a_camera_timeout(setup, rig):
    """A camera times out, then the stamps jump back (looping bag) and it publishes
    again: the reset forgets the time-out, and so must /diagnostics."""
    graph, node, publisher, collector = setup
    cam0, cam1 = rig.names
    _still_works(graph, node, publisher, TIMES[2])
    for i in range(1, round(CAMERA_TIMEOUT / 0.2) + 3):
        publisher.publish(TIMES[2], cameras=[cam0], stamp_ns=stamp_of(TIMES[2] + 0.01 * i))
        graph.spin_for(0.2)
    _problem(collector, f"camera {cam1}", "camera_timeout", "windows continue without it")
    collector.msgs["diagnostics"].clear()  # from here on, camera 1 shows the time-out
    report = _still_works(graph, node, publisher, TIMES[0])
    assert report.num_cameras == 2 and report.epoch == 1
    status = collector.wait_status(
        f"camera {cam1}",
        lambda s: not any(kv.key == "problem: camera_timeout" for kv in s.values))
    assert status is not None, collector.statuses(f"camera {cam1}")[0].message


def test_aspect_is_checked_at_the_model_input_size_on_arrival(padded, rig):
    """250x20 keeps a 14 px patch at 504 px but not at the model's 112: refused on
    arrival, so the cycle of the other cameras does not fail."""
    graph, node, publisher, collector = padded
    cam0, cam1 = rig.names
    _still_works(graph, node, publisher, TIMES[0])
    stamp = stamp_of(TIMES[1])
    publisher.publish(TIMES[1], cameras=[cam0])
    wide = np.zeros((20, 250, 3), np.uint8)
    publisher.images[cam1].publish(array_to_image(wide, "rgb8", publisher.header(cam1, stamp)))
    _problem(collector, f"camera {cam1}", "image_rejected", "at img_size 112", ERROR)
    _still_works(graph, node, publisher, TIMES[2])
    assert node.problems.level("pipeline") < ERROR, node.problems.active("pipeline")


def test_lone_bad_stamps_are_refused_without_resetting_the_world(setup, rig):
    graph, node, publisher, collector = setup
    cam0, cam1 = rig.names
    for t in TIMES[:2]:
        _still_works(graph, node, publisher, t)
    image = rig.render(cam0, TIMES[2]).image
    publisher.images[cam0].publish(array_to_image(image, "rgb8", publisher.header(cam0, 0)))
    _problem(collector, f"camera {cam0}", "stamp_rejected", "header stamp is 0 (unset)")
    # One camera an hour ahead of the others, once: held, then refused when it is back.
    ahead = stamp_of(TIMES[2]) + 3600 * 10**9
    publisher.publish(TIMES[2], cameras=[cam1], stamp_ns=ahead)
    report = _still_works(graph, node, publisher, TIMES[2])
    _problem(collector, f"camera {cam1}", "stamp_rejected", "lone outlier")
    assert report.epoch == 0 and report.num_cameras == 2
    assert _still_works(graph, node, publisher, TIMES[3]).epoch == 0
    assert graph.spin_until(lambda: len(collector.last("trajectory").poses) == 4, 5)
    stats = node.sync.stats()
    assert stats[cam0].rejected == 1 and stats[cam1].rejected == 1


# ---------------------------------------------------------------- compressed input
@pytest.fixture
def compressed(rig, backend):
    graph = RosGraph()
    node = graph.reconstruct_node(
        backend, cameras=rig.names, rate=20.0, input_qos="reliable", window_timesteps=1,
        image_transport="compressed", use_input_camera_info=True, max_pixels=MAX_PIXELS,
    )
    source = graph.create_node("compressed_rig")
    images = {n: source.create_publisher(CompressedImage, f"{n}/image_raw/compressed",
                                         RELIABLE) for n in rig.names}
    infos = {n: source.create_publisher(CameraInfo, f"{n}/camera_info", RELIABLE)
             for n in rig.names}
    collector = OutputCollector(graph, rig.names)
    assert graph.spin_until(lambda: all(p.get_subscription_count()
                                        for p in [*images.values(), *infos.values()]), 20)
    yield graph, node, images, infos, collector
    graph.close()


def _compressed(rig, camera, stamp_ns, data: bytes, fmt: str) -> CompressedImage:
    header = Header(stamp=stamp_from_ns(stamp_ns), frame_id=rig.camera(camera).optical_frame)
    return CompressedImage(header=header, format=fmt, data=data)


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def test_compressed_bombs_are_refused_and_large_jpegs_reduced(compressed, rig, backend):
    graph, node, images, infos, collector = compressed
    cam0, cam1 = rig.names
    # The 79 KB PNG of 9000x9000 that took the node from 300 MB to 1.6 GB: refused from
    # its header, before a pixel is decoded.
    images[cam0].publish(_compressed(rig, cam0, stamp_of(0.1), constant_png(9000, 9000),
                                     "png"))
    _problem(collector, f"camera {cam0}", "image_rejected", "9000x9000 (81.0 MP): refused",
             ERROR)
    images[cam1].publish(_compressed(rig, cam1, stamp_of(0.1),
                                     constant_png(100_000, 100_000, rows=1), "png"))
    _problem(collector, f"camera {cam1}", "image_rejected", "decompression bomb", ERROR)

    # A JPEG of 4 x 4 times max_pixels with its CameraInfo: reduced while decoding (to
    # 1/4 scale here), the CameraInfo scaled to match, and reconstructed.
    stamp = stamp_of(TIMES[1])
    view = rig.render(cam0, TIMES[1])
    big = np.array(PILImage.fromarray(view.image).resize((448, 336), PILImage.NEAREST))
    jpeg = _encoded(big, "JPEG")
    small = decode_image(jpeg, MAX_PIXELS).rgb
    assert small.shape == (84, 112, 3)
    backend.register(small, rig.intrinsics(cam0), view.c2w)
    cam = rig.camera(cam0)
    big_info = CameraInfoData(cam.k, 112, 84).scaled(448, 336)
    header = Header(stamp=stamp_from_ns(stamp), frame_id=cam.optical_frame)
    infos[cam0].publish(camera_info_from_intrinsics(big_info.k, 448, 336, header))
    graph.spin_for(0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images[cam0].publish(_compressed(rig, cam0, stamp, jpeg, "jpeg"))
        images[cam1].publish(_compressed(rig, cam1, stamp,
                                         _encoded(rig.render(cam1, TIMES[1]).image, "PNG"),
                                         "png"))
        report = wait_cycle(graph, node, stamp)
    assert report.num_cameras == 2
    assert not [w for w in caught if "not writable" in str(w.message)]
    _problem(collector, f"camera {cam0}", "image_downscaled", "448x336 exceeds max_pixels")
    collector.wait_products(stamp, [cam0])
    info = collector.stamped(f"{cam0}/camera_info", stamp)
    assert (info.width, info.height) == (112, 84)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), cam.k, atol=1e-9)
    assert node.sync.stats()[cam0].rejected == 1 and node.sync.stats()[cam1].rejected == 1


# ---------------------------------------------------------------------------------------
# Parameters at start (the node as its own process, like `ros2 run`): a value the node
# cannot start with ends it with exit status 2 and one line naming the parameter and the
# reason; no traceback.

@pytest.mark.parametrize(("override", "reason"), [
    ("num_steps:=0", "parameter num_steps: Parameter num_steps out of range. Min: 1, Max: 64"),
    ("num_steps:=abc", "parameter num_steps: Trying to set parameter 'num_steps' to 'abc'"),
    ("precision:=int8", "precision must be one of fp32, bf16, fp16, got 'int8'"),
    ("torch_threads:=-1",
     "parameter torch_threads: Parameter torch_threads out of range. Min: 0, Max: 1024"),
    # An empty checkpoint would mean "the default", a download of nvidia/dvlt: refused.
    ("checkpoint:=''", "parameter checkpoint: checkpoint must not be empty"),
    ("budget_min_num_steps:=20",
     "budget_min_num_steps (20) must be <= budget_max_num_steps (16)"),
    ("cameras:=['cam 0']", "camera namespace 'cam 0' is not a valid ROS name"),
])
def test_invalid_parameter_at_start_ends_the_node_with_one_line(override, reason):
    result = subprocess.run([*node_command(), "--ros-args", "-p", override],
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2, lines
    assert len(lines) == 1, lines
    assert "[FATAL]" in lines[0] and reason in lines[0], lines[0]
    assert "Fix it in the parameters file or the -p override" in lines[0]


def test_bad_depth_images(rig, backend, capfd):
    """Depth the node cannot use (scale_source depth): each gives a WARN naming the reason
    on its camera and is counted; good depth and images go on being used."""
    graph, node, publisher, collector = _graph(rig, backend, scale_source="depth")
    try:
        cam1 = rig.names[1]
        depth_node = graph.create_node("depth_camera")
        depth = depth_node.create_publisher(Image, f"{cam1}/depth/image_raw", RELIABLE)
        assert graph.spin_until(lambda: depth.get_subscription_count() > 0, 10)
        _still_works(graph, node, publisher, TIMES[0])
        frame = rig.camera(cam1).optical_frame
        metres = rig.render(cam1, TIMES[1]).depth.astype(np.float32)
        good_stamp = stamp_of(TIMES[1])

        def send(pixels, encoding, stamp=good_stamp, frame_id=frame, cut=False):
            msg = array_to_image(pixels, encoding, Header(stamp=stamp_from_ns(stamp),
                                                          frame_id=frame_id))
            if cut:
                msg.data = msg.data[: len(msg.data) // 2]
            depth.publish(msg)

        refusals = [
            (lambda: send(metres.astype(np.uint16), "mono16"), "is not 16UC1"),
            (lambda: send(metres, "32FC1", stamp=0), "unset or negative"),
            (lambda: send(np.ones((300, 300), np.float32), "32FC1"),
             f"only 4 x max_pixels = {4 * MAX_PIXELS} pixels can be decoded"),
            (lambda: send(metres, "32FC1", cut=True), "expected step*height"),
            # Its own frame, without the depth camera_info it needs to be reprojected.
            (lambda: send(metres, "32FC1", frame_id="depth_optical"), "needs its CameraInfo"),
        ]
        for count, (publish, reason) in enumerate(refusals, start=1):
            publish()
            _problem(collector, f"camera {cam1}", "depth_rejected", reason)
            status = collector.wait_status(": pipeline", lambda s, c=str(count): status_values(
                s).get("depth_rejected") == c)
            assert status is not None, f"depth refusal {count} ({reason}) was not counted"
        # Registered 32FC1 metres with NaN holes is fine; the node still reconstructs.
        metres[:5] = np.nan
        send(metres, "32FC1")
        report = _still_works(graph, node, publisher, TIMES[1])
        assert report.num_cameras == 2
        status = collector.wait_status(": pipeline", lambda s: status_values(s).get(
            "depth_received") == str(len(refusals) + 1))
        assert status is not None and status_values(status)["depth_rejected"] == str(
            len(refusals))
        logs = capfd.readouterr().err
        assert logs.count(f"depth_rejected: [{cam1}] depth image dropped") == len(refusals)
    finally:
        graph.close()


def _has(node, target: str, source: str, stamp_ns: int) -> bool:
    try:
        node.tf.lookup(target, source, stamp_ns)
    except TransformError:
        return False
    return True


def test_missing_partial_and_stale_tf():
    """scale_source rig + anchor tf while TF is (1) absent: up to scale, unanchored; (2)
    there for one camera only: no rig scale; (3) static for both but odometry stopped: the
    rig scale is back, the newest views are not placed by TF; and a transform with a second
    parent. Each time a WARN status says what is wrong, products are still published and the
    node carries on."""
    rig = default_rig(width=112, height=84, num_cameras=2)
    times = [0.5 * i for i in range(6)]
    graph = RosGraph()
    try:
        _missing_partial_and_stale_tf(graph, rig, times)
    finally:
        graph.close()


def _missing_partial_and_stale_tf(graph, rig, times):
    node = graph.reconstruct_node(
        GroundTruthUnscaledBackend.for_rig(rig, times, img_size=112), cameras=rig.names,
        rate=20.0, input_qos="reliable", img_size=112, camera_timeout=1e4, window_timesteps=2,
        scale_source="rig", anchor="tf", world_frame="odom")
    collector = OutputCollector(graph, rig.names)
    images = RigPublisher(graph, rig)
    robot = graph.create_node("robot_tf")
    tf = robot.create_publisher(TFMessage, "/tf", TF_QOS)
    tf_static = robot.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
    images.wait_connected()

    def mounts(names):
        return tf_message([transform_stamped(rig.camera(n).base_from_camera, "base_link",
                                             rig.camera(n).optical_frame, stamp_from_ns(0))
                           for n in names])

    def odometry(t):
        return tf_message([transform_stamped(rig.world_from_base(t), "odom", "base_link",
                                             stamp_from_ns(stamp_of(t)))])

    def cycle(t):
        stamp = images.publish(t)
        report = wait_cycle(graph, node, stamp)
        collector.wait_products(stamp, rig.names)
        assert collector.stamped("points", stamp).header.frame_id == "odom"
        return report

    # (1) No TF at all.
    for t in times[:2]:
        report = cycle(t)
        assert not report.metric and report.anchor == "unanchored"
    status = collector.wait_status(": pipeline", lambda s: level(s) == WARN
                                   and "problem: scale_unavailable" in status_values(s))
    assert status is not None and "no metric scale available" in status.message
    assert "arbitrary" in status_values(status)["units"]

    # (2) The second camera has no TF frame.
    tf_static.publish(mounts(rig.names[:1]))
    for t in times[2:4]:
        tf.publish(odometry(t))
        assert graph.spin_until(lambda t=t: _has(node, "odom", rig.camera(rig.names[0])
                                                 .optical_frame, stamp_of(t)), 10)
        report = cycle(t)
        # No rig scale from one mount (a Sim(3) TF anchor over the one camera's motion may
        # still give a scale: source "tf").
        assert report.scale_source != "rig"
    missing = rig.camera(rig.names[1]).optical_frame
    status = collector.wait_status(f"camera {rig.names[1]}", lambda s: level(s) == WARN
                                   and missing in status_values(s).get(
                                       "problem: tf_unavailable", ""))
    assert status is not None
    # A second parent for base_link (another node publishing map -> base_link): dropped,
    # reported; the tree keeps odom -> base_link.
    tf.publish(tf_message([transform_stamped(np.eye(4), "map", "base_link",
                                             stamp_from_ns(stamp_of(times[3])))]))
    _problem(collector, ": pipeline", "tf_dropped", "two parents")
    assert _has(node, "odom", "base_link", stamp_of(times[3]))

    # (3) Both mounts, but odometry stopped at the last snapshot: the rig scale is back;
    # the newest views cannot be placed by TF (stale: it would extrapolate), the window is
    # placed through the views that can, or held.
    tf_static.publish(mounts(rig.names))
    assert graph.spin_until(lambda: _has(node, "base_link", missing, stamp_of(times[3])), 10)
    for t in times[4:]:
        report = cycle(t)
    assert report.metric and report.scale_source == "rig"
    status = collector.wait_status(f"camera {rig.names[0]}", lambda s: level(s) == WARN
                                   and "extrapolate into the future" in status_values(s).get(
                                       "problem: tf_unavailable", ""))
    assert status is not None
    assert node.last_report.cycle == len(times)


def _has(node, target: str, source: str, stamp_ns: int) -> bool:
    try:
        node.tf.lookup(target, source, stamp_ns)
    except TransformError:
        return False
    return True
