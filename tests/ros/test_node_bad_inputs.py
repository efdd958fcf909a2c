"""Bad input to reconstruct_node over real DDS: each gives a clear log line and a
/diagnostics status, and the node keeps reconstructing the good input."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from node_harness import (
    OutputCollector,
    RigPublisher,
    RosGraph,
    level,
    node_command,
    stamp_of,
    wait_cycle,
)
from sensor_msgs.msg import CameraInfo, Image

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.synthetic import default_rig
from dvlt_ros.conversions.image import array_to_image
from dvlt_ros.pipeline.frames import CameraFrame, prepare_frame

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


@pytest.fixture
def setup(rig, backend):
    graph = RosGraph()
    node = graph.reconstruct_node(
        backend, cameras=rig.names, rate=20.0, input_qos="reliable", camera_timeout=CAMERA_TIMEOUT,
        resolution_policy="reject", use_input_camera_info=True, max_pixels=MAX_PIXELS,
        window_timesteps=2,
    )
    publisher = RigPublisher(graph, rig, camera_info=True)
    collector = OutputCollector(graph, rig.names)
    publisher.wait_connected()
    yield graph, node, publisher, collector
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

    _raw_image(publisher, cam0, stamp_of(0.7), encoding="yuv422")
    _problem(collector, f"camera {cam0}", "image_rejected",
             "encoding 'yuv422' is not a colour encoding", ERROR)
    _raw_image(publisher, cam1, stamp_of(0.7), width=0, height=0)
    _problem(collector, f"camera {cam1}", "image_rejected", "zero size", ERROR)
    _still_works(graph, node, publisher, TIMES[1])

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
    assert f"image_rejected: [{cam0}] image encoding 'yuv422' is not a colour" in logs
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


# ---------------------------------------------------------------------------------------
# Parameters at start (the node as its own process, like `ros2 run`): a value the node
# cannot start with ends it with exit status 2 and one line naming the parameter and the
# reason; no traceback.

@pytest.mark.parametrize(("override", "reason"), [
    ("num_steps:=0", "parameter num_steps: Parameter num_steps out of range. Min: 1, Max: 64"),
    ("num_steps:=abc", "parameter num_steps: Trying to set parameter 'num_steps' to 'abc'"),
    ("precision:=int8", "precision must be one of fp32, bf16, fp16, got 'int8'"),
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
