"""reconstruct_node over real DDS with the ground-truth backend: what it publishes must
match the synthetic scene (cloud, depth, CameraInfo, TF, stamps, frames) tightly."""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import (
    OutputCollector,
    RigPublisher,
    RosGraph,
    wait_cycle,
    world_points,
)

from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.synthetic import default_rig
from dvlt_ros.conversions.camera_info import intrinsics_from_camera_info
from dvlt_ros.conversions.image import image_to_array
from dvlt_ros.conversions.pointcloud import cloud_to_array, unpack_rgb
from dvlt_ros.conversions.tf import matrix_from_transform, ns_from_stamp
from dvlt_ros.pipeline.configs import BODY_FROM_OPTICAL
from dvlt_ros.pipeline.frames import CameraFrame, CameraInfoData, prepare_frame

TIMES = (0.0, 0.5, 1.0)
# 168x126 is exactly the network canvas at img_size 168: no resampling anywhere.
NET_W, NET_H = 168, 126


@pytest.fixture
def graph():
    g = RosGraph()
    yield g
    g.close()


def _run(graph, rig, backend, camera_info=False, times=TIMES, **params):
    node = graph.reconstruct_node(
        backend, cameras=rig.names, rate=20.0, input_qos="reliable", img_size=NET_W,
        cloud_stride=2, confidence_threshold=1.5, **params,
    )
    publisher = RigPublisher(graph, rig, camera_info=camera_info)
    collector = OutputCollector(graph, rig.names)
    publisher.wait_connected()
    stamps = []
    for t in times:
        stamps.append(publisher.publish(t))
        wait_cycle(graph, node, stamps[-1])
    collector.wait_products(stamps[-1], rig.names)
    return node, collector, stamps


def _expected_pose(rig, name, t):
    """GT pose in the node's world: the body frame (REP 103) of the first window's
    reference camera (``world_axes: body``)."""
    world_from_reference = np.eye(4)
    world_from_reference[:3, :3] = BODY_FROM_OPTICAL
    reference = rig.camera_pose(rig.names[0], TIMES[0])
    return world_from_reference @ np.linalg.inv(reference) @ rig.camera_pose(name, t)


def test_outputs_match_scene_exactly(graph):
    rig = default_rig(width=NET_W, height=NET_H, num_cameras=2)
    backend = GroundTruthBackend.for_rig(rig, TIMES, img_size=NET_W)
    node, out, stamps = _run(graph, rig, backend)
    t, stamp = TIMES[-1], stamps[-1]

    # TF: world_frame -> <optical frame>_dvlt for the newest snapshot, camera-to-world.
    tf = out.tf_at(stamp)
    assert len(tf.transforms) == 2
    for tr, name in zip(tf.transforms, rig.names, strict=True):
        assert tr.header.frame_id == "dvlt_world"
        assert tr.child_frame_id == f"{rig.camera(name).optical_frame}_dvlt"
        np.testing.assert_allclose(matrix_from_transform(tr), _expected_pose(rig, name, t),
                                   atol=2e-4)

    for name in rig.names:
        truth = rig.render(name, t)
        info = out.stamped(f"{name}/camera_info", stamp)
        depth_msg = out.stamped(f"{name}/depth", stamp)
        conf_msg = out.stamped(f"{name}/confidence", stamp)
        assert info is not None and depth_msg is not None and conf_msg is not None
        frame = f"{rig.camera(name).optical_frame}_dvlt"
        assert info.header.frame_id == depth_msg.header.frame_id == frame
        assert (depth_msg.encoding, conf_msg.encoding) == ("32FC1", "32FC1")
        assert (info.width, info.height) == (depth_msg.width, depth_msg.height) == (NET_W, NET_H)
        np.testing.assert_allclose(intrinsics_from_camera_info(info), truth.k, atol=1e-3)
        depth = image_to_array(depth_msg)
        np.testing.assert_allclose(depth, truth.depth, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(image_to_array(conf_msg), backend.confidence)

    # Cloud: every 2nd pixel of each window view (newest snapshot, then keyframes newest
    # first), unprojected with the true depth and pose, coloured with the image.
    cloud = cloud_to_array(out.stamped("points", stamp))
    assert out.stamped("points", stamp).header.frame_id == "dvlt_world"
    order = [(n, t) for t in reversed(TIMES) for n in rig.names]
    assert node.last_report.num_views == len(order)
    expected_xyz, expected_rgb = [], []
    for name, tv in order:
        view = rig.render(name, tv)
        pts = world_points(view.depth, view.k, _expected_pose(rig, name, tv))
        expected_xyz.append(pts[::2, ::2].reshape(-1, 3))
        expected_rgb.append(view.image[::2, ::2].reshape(-1, 3))
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1)
    np.testing.assert_allclose(xyz, np.concatenate(expected_xyz), atol=2e-3)
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), np.concatenate(expected_rgb))
    np.testing.assert_allclose(cloud["confidence"], backend.confidence)

    # Trajectory: the reference camera at each cycle, stamped with its images.
    # The Path is published after the cloud: wait for the one of the last cycle.
    assert graph.spin_until(
        lambda: out.last("trajectory") is not None
        and len(out.last("trajectory").poses) == len(stamps)
    )
    path = out.last("trajectory")
    assert [ns_from_stamp(p.header.stamp) for p in path.poses] == stamps
    for pose, tv in zip(path.poses, TIMES, strict=True):
        position = [pose.pose.position.x, pose.pose.position.y, pose.pose.position.z]
        np.testing.assert_allclose(position, _expected_pose(rig, rig.names[0], tv)[:3, 3],
                                   atol=2e-4)
    assert graph.spin_until(lambda: out.last("frusta") is not None)
    frusta = out.last("frusta")
    assert [m.action for m in frusta.markers[:1]] == [3]  # DELETEALL, then one per camera
    assert len(frusta.markers) == 1 + len(rig.names)
    assert node.last_report.units == "m"


def test_resized_images_get_scaled_intrinsics(graph):
    """Images twice the network size: the published CameraInfo is the true K of the
    published (original-size) depth."""
    rig = default_rig(width=2 * NET_W, height=2 * NET_H, num_cameras=2)
    backend = GroundTruthBackend.for_rig(rig, TIMES[:1], img_size=NET_W)
    _, out, stamps = _run(graph, rig, backend, times=TIMES[:1])
    for name in rig.names:
        info = out.stamped(f"{name}/camera_info", stamps[0])
        depth = image_to_array(out.stamped(f"{name}/depth", stamps[0]))
        truth = rig.render(name, TIMES[0])
        assert (info.width, info.height) == (2 * NET_W, 2 * NET_H) == depth.shape[::-1]
        # Predicted intrinsics are fitted at network resolution and mapped back.
        np.testing.assert_allclose(intrinsics_from_camera_info(info), truth.k, atol=2e-2)
        err = np.abs(depth - truth.depth)[np.isfinite(depth)]
        assert np.median(err) < 1e-3 and np.isfinite(depth).mean() > 0.99


def test_input_camera_info_follows_downscaling(graph):
    """use_input_camera_info with images above max_pixels: the node downscales on arrival
    and publishes the input K scaled to the downscaled image, with depth on that grid."""
    rig = default_rig(width=2 * NET_W, height=2 * NET_H, num_cameras=2)
    backend = GroundTruthBackend(rig.scene, img_size=NET_W)
    scaled = {}
    for name in rig.names:
        view = rig.render(name, TIMES[0])
        frame = CameraFrame(name, 0, "", view.image, CameraInfoData(view.k, 2 * NET_W,
                                                                    2 * NET_H))
        small, _ = prepare_frame(frame, max_pixels=NET_W * NET_H)
        backend.register(small.rgb, small.info.k, view.c2w)
        scaled[name] = small.info.k
    _, out, stamps = _run(graph, rig, backend, camera_info=True, times=TIMES[:1],
                          use_input_camera_info=True, max_pixels=NET_W * NET_H)
    for name in rig.names:
        info = out.stamped(f"{name}/camera_info", stamps[0])
        depth = image_to_array(out.stamped(f"{name}/depth", stamps[0]))
        assert (info.width, info.height) == (NET_W, NET_H) == depth.shape[::-1]
        np.testing.assert_allclose(intrinsics_from_camera_info(info), scaled[name], atol=1e-4)
        truth = rig.scene.depth(scaled[name], rig.camera_pose(name, TIMES[0]), NET_H, NET_W)
        np.testing.assert_allclose(depth, truth, rtol=1e-4, atol=1e-4)
